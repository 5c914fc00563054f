"""Caption near-duplicate detection: recall on edited copies and false positives on unrelated sentences,
for several thresholds of the caption distance (1 - Jaccard of word bigrams), through the real CaptionIndex
(MinHash LSH candidates + exact check), so LSH misses count against recall.

Sentences come from a package only: Debian's `fortunes` (fetched by bench/fetch_dedup_photos.sh), split
into sentences of 5-25 words, caption-like in length. The first half are the "eval captions"; edited copies
of them are the queries that must match; the second half are unrelated sentences that must not.

    python bench/bench_dedup_captions.py --fortunes bench/work/photos/fortunes
"""

import argparse
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dedup.caption_index import CaptionIndex, shingles  # noqa: E402
from openwit.hashing import stable_uniform  # noqa: E402

FILLERS = ["photo", "stock", "image", "free", "old", "new", "big", "little", "today", "very"]


def sentences(root: str, limit: int) -> list[str]:
    out, seen = [], set()
    for path in sorted(glob.glob(os.path.join(root, "usr/share/games/fortunes/*"))):
        if "." in os.path.basename(path):  # .dat indexes and .u8 duplicates
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = " ".join(f.read().split())
        for s in re.split(r"(?<=[.!?])\s+|\s%\s", text):
            s = s.strip(" %")
            words = s.split()
            key = " ".join(re.findall(r"\w+", s.lower()))  # the same caption to CaptionIndex: one copy
            if 5 <= len(words) <= 25 and key not in seen and shingles(s):
                seen.add(key)
                out.append(s)
    order = sorted(range(len(out)), key=lambda i: stable_uniform("captions", out[i]))
    return [out[i] for i in order[:limit]]


def edit(caption: str, kind: str, key: str) -> str:
    words = caption.split()

    def pos(tag):
        return int(stable_uniform("edit", key, tag) * len(words)) % len(words)

    if kind == "case_punctuation":
        return re.sub(r"[^\w\s]", " ", caption).upper() + "!"
    if kind == "drop_word":
        i = pos("d")
        return " ".join(words[:i] + words[i + 1:])
    if kind == "add_word":
        i = pos("a")
        return " ".join(words[:i] + [FILLERS[pos("f") % len(FILLERS)]] + words[i:])
    if kind == "change_word":
        i = pos("c")
        return " ".join(words[:i] + [FILLERS[pos("f") % len(FILLERS)]] + words[i + 1:])
    if kind == "change_2_words":
        return edit(edit(caption, "change_word", key + "1"), "change_word", key + "2")
    if kind == "suffix":
        return caption + " - stock photo, royalty free"
    raise ValueError(kind)


KINDS = ["case_punctuation", "drop_word", "add_word", "change_word", "change_2_words", "suffix"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fortunes", default="bench/work/photos/fortunes")
    ap.add_argument("--captions", type=int, default=4000, help="eval captions (as many unrelated ones)")
    args = ap.parse_args(argv)
    corpus = sentences(args.fortunes, 2 * args.captions)
    if len(corpus) < 2 * args.captions:
        print(f"only {len(corpus)} sentences found under {args.fortunes}", file=sys.stderr)
    evals, unrelated = corpus[: len(corpus) // 2], corpus[len(corpus) // 2:]
    thresholds = [0.3, 0.4, 0.5, 0.6, 0.7]
    print(f"{len(evals)} eval captions, {len(unrelated)} unrelated sentences; cells: fraction matched")
    print("| edit | words (median) | " + " | ".join(f"≤{t}" for t in thresholds) + " |")
    print("|" + "---|" * (len(thresholds) + 2))
    rows = {k: [] for k in KINDS + ["**unrelated (false positives)**"]}
    for t in thresholds:
        index = CaptionIndex(evals, list(range(len(evals))), max_distance=t)
        for kind in KINDS:
            hits = [any(owner == i for owner, _ in index.query(edit(c, kind, str(i)))) for i, c in enumerate(evals)]
            rows[kind].append(sum(hits) / len(hits))
        fp = [bool(index.query(s)) for s in unrelated]
        rows["**unrelated (false positives)**"].append(sum(fp) / len(fp))
    words = sorted(len(c.split()) for c in evals)[len(evals) // 2]
    for kind, cells in rows.items():
        print(f"| {kind} | {words} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
