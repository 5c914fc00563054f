"""Query matching with 500k queries: QueryMatcher (one Aho-Corasick pass) vs MetaCLIP's naive per-entry loop.

Queries: every word of Debian's `wamerican` list (/usr/share/dict/words; `apt-get install wamerican`) plus
bigrams of those words up to 500,000 entries, as CLIP's list is unigrams + bigrams + titles. Captions: 8-20
words drawn with Zipf frequencies (as words in alt text are), with punctuation and capitals, so they match a
realistic handful of queries each. Both matchers run on the same captions in one process, on one core; the
naive loop is timed on a small sample (it takes tens of milliseconds per caption) and must agree with the
automaton on it. Reports the median of several runs and the ratio.

    python bench/bench_match.py [--queries 500000] [--captions 100000] [--naive-captions 30] [--runs 5]
"""

import argparse
import platform
import statistics
import subprocess
import time

import numpy as np

from openwit.hashing import stable_hash64
from pipeline.match import QueryMatcher, naive_match


def load_words(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return sorted({w.strip() for w in f if w.strip() and "'" not in w})


def make_queries(words: list[str], n: int) -> list[str]:
    queries, seen = list(words[:n]), set(words[:n])
    i = 0
    while len(queries) < n:  # deterministic bigrams, from stable hashes (no random state)
        a = words[stable_hash64("a", i) % len(words)]
        b = words[stable_hash64("b", i) % len(words)]
        i += 1
        if f"{a} {b}" not in seen:
            seen.add(f"{a} {b}")
            queries.append(f"{a} {b}")
    return queries


def make_captions(words: list[str], n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(words))  # which words are frequent
    captions = []
    for _ in range(n):
        length = int(rng.integers(8, 21))
        ranks = np.minimum(rng.zipf(1.3, size=length), len(words)) - 1
        tokens = [words[order[r]] for r in ranks]
        tokens[0] = tokens[0].capitalize()
        text = " ".join(tokens)
        if rng.random() < 0.5:
            cut = int(rng.integers(1, length))
            text = " ".join(tokens[:cut]) + ", " + " ".join(tokens[cut:])
        captions.append(text + rng.choice([".", "", "!", " - photo"]))
    return captions


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--words", default="/usr/share/dict/words")
    parser.add_argument("--queries", type=int, default=500_000)
    parser.add_argument("--captions", type=int, default=100_000)
    parser.add_argument("--naive-captions", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    words = load_words(args.words)
    queries = make_queries(words, args.queries)
    captions = make_captions(words, args.captions)
    build_s = timed(lambda: QueryMatcher(queries))
    matcher = QueryMatcher(queries)

    sample = captions[: args.naive_captions]
    for caption in sample:
        assert matcher.match(caption) == naive_match(caption, queries), caption

    fast = [timed(lambda: [matcher.match(c) for c in captions]) for _ in range(args.runs)]
    naive = [timed(lambda: [naive_match(c, queries) for c in sample]) for _ in range(max(3, args.runs // 2))]
    fast_rate = args.captions / statistics.median(fast)
    naive_rate = len(sample) / statistics.median(naive)
    matches = sum(len(matcher.match(c)) for c in captions[:10_000]) / 10_000

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"machine: {model}, {platform.python_version()}, one process (one core)")
    print(f"queries: {len(queries):,} ({len(words):,} words + bigrams); captions: {args.captions:,} "
          f"(mean {matches:.1f} matched queries each); automaton build: {build_s:.1f} s")
    print(f"QueryMatcher (Aho-Corasick): {fast_rate:,.0f} captions/s  (median of {args.runs}: "
          f"{', '.join(f'{t:.2f}' for t in fast)} s)")
    print(f"naive loop (MetaCLIP):       {naive_rate:,.1f} captions/s  (median of {len(naive)}, "
          f"{len(sample)} captions)")
    print(f"ratio: {fast_rate / naive_rate:,.0f}x")


if __name__ == "__main__":
    main()
