"""Benchmark the query builder's counting stage against the obvious peer, a single-process Python Counter.

Input: a synthetic English-Wikipedia-like dump (MediaWiki export XML, bz2) written under bench/work/queries/:
articles with an infobox template, links, refs, a table, a file link and a category, over a Zipf-distributed
vocabulary of 50,000 words. Sizes 1x, 2x, 4x (--articles per 1x).

  ours  `python -m queries.build_queries --wiki-dump ... --runner FnApiRunner` (in-process: one core), the
        whole pipeline: read + strip + count + PMI join + merge + write.
  peer  one Python loop over the same dump: the same XML streaming, markup stripping and word splitting
        (queries.wiki_dump / wikitext / tokens), then collections.Counter for unigrams and bigrams.
        It stops at the counts; no PMI, no merge, no output.

Reported: medians of --runs runs; tokens/s per core = tokens / wall time (one process each, so one core);
ratio = ours / peer time. Run: python bench/bench_queries.py [--articles 1500] [--runs 3]
"""

import argparse
import bz2
import hashlib
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from queries.ngrams import count_text  # noqa: E402
from queries.wiki_dump import ReadArticles  # noqa: E402
from queries.wikitext import strip_markup  # noqa: E402

WORK = ROOT / "bench" / "work" / "queries"
VOCABULARY = 50_000


def _word(rank: int) -> str:
    h = hashlib.blake2b(str(rank).encode(), digest_size=6).hexdigest()
    return ("W" if rank % 7 == 0 else "w") + h[: 3 + rank % 6]


def _zipf_ranks(seed: int, n: int):
    # Deterministic Zipf(1) draws by inverse CDF over a hash stream: rank ~ VOCABULARY ** u.
    for i in range(n):
        u = int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=4).digest(), "big") / 2**32
        yield int(VOCABULARY ** u) - 1


def _article(i: int, words: list[str]) -> str:
    sentences = [" ".join(words[j:j + 12]) + "." for j in range(0, len(words), 12)]
    body = "\n".join(
        f"'''{s.split()[0]}''' {s} [[{words[k % len(words)]}|{words[(k + 1) % len(words)]}]] "
        f"<ref>{{{{cite web|title=Ref {k}}}}}</ref>" for k, s in enumerate(sentences))
    return (f"{{{{Infobox thing|name=A{i}|value={{{{convert|{i}|km}}}}}}}}\n{body}\n== Section ==\n"
            f"{{| class=\"wikitable\"\n|-\n| cell {i}\n|}}\n[[File:X{i}.jpg|thumb|caption [[link]]]]\n"
            f"[[Category:Things]]")


def write_dump(path: Path, articles: int, words_per_article: int = 400) -> None:
    escape = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
    with bz2.open(path, "wt", encoding="utf-8") as f:
        f.write('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11">\n<siteinfo/>\n')
        for i in range(articles):
            words = [_word(r) for r in _zipf_ranks(i, words_per_article)]
            f.write(f"<page><title>A{i}</title><ns>0</ns><id>{i}</id><revision><text xml:space=\"preserve\">"
                    f"{_article(i, words).translate(escape)}</text></revision></page>\n")
        f.write("</mediawiki>\n")


def run_ours(dump: Path, out: Path) -> tuple[float, int]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "queries.build_queries", "--wiki-dump", str(dump), "--output", str(out),
                    "--runner", "FnApiRunner", "--min-unigram-count", "5", "--min-pmi", "10"],
                   cwd=ROOT, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    import json
    tokens = json.loads((out / "queries_summary.json").read_text())["counters"]["tokens_counted"]
    return seconds, tokens


def run_peer(dump: Path) -> tuple[float, int]:
    start = time.perf_counter()
    unigrams, bigrams, tokens = Counter(), Counter(), 0
    for text in ReadArticles().process((str(dump), None, None)):
        tokens += count_text(strip_markup(text), unigrams, bigrams)
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--articles", type=int, default=1500, help="articles in the 1x dump")
    parser.add_argument("--runs", type=int, default=3)
    a = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, " + subprocess.run(
        "lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.strip())
    print("| input | tokens | ours median s | ours tokens/s/core | peer median s | peer tokens/s/core | ratio |")
    print("|---|---|---|---|---|---|---|")
    for scale in (1, 2, 4):
        dump = WORK / f"bench-{scale}x.xml.bz2"
        if not dump.exists():
            write_dump(dump, a.articles * scale)
        ours = [run_ours(dump, WORK / f"out-{scale}x") for _ in range(a.runs)]
        peer = [run_peer(dump) for _ in range(a.runs)]
        tokens = ours[0][1]
        assert tokens == peer[0][1], "ours and the peer must count the same tokens"
        ours_s = statistics.median(s for s, _ in ours)
        peer_s = statistics.median(s for s, _ in peer)
        print(f"| {scale}x ({a.articles * scale} articles) | {tokens:,} | {ours_s:.2f} | {tokens / ours_s:,.0f} "
              f"| {peer_s:.2f} | {tokens / peer_s:,.0f} | {ours_s / peer_s:.2f} |", flush=True)


if __name__ == "__main__":
    main()
