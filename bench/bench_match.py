"""Query matching with 500k queries: QueryMatcher (a compiled word trie) vs MetaCLIP's naive per-entry loop,
and vs a character-level Aho-Corasick automaton (pyahocorasick), the usual tool for many patterns at once.

Queries: every word of Debian's `wamerican` list (/usr/share/dict/words; `apt-get install wamerican`) plus
bigrams of those words up to 500,000 entries, as CLIP's list is unigrams + bigrams + titles. Captions: 8-20
words drawn with Zipf frequencies (as words in alt text are), with punctuation and capitals, so they match a
realistic handful of queries each. All matchers run on the same captions in one process, on one core, runs
interleaved; the naive loop is timed on a small sample (it takes tens of milliseconds per caption) and every
matcher must agree with it there. Reports medians of several runs and the ratios.

    python bench/bench_match.py [--queries 500000] [--captions 100000] [--naive-captions 30] [--runs 5]
"""

import argparse
import platform
import statistics
import subprocess
import time
from collections import deque
from operator import itemgetter

import ahocorasick
import numpy as np

from openwit.hashing import stable_hash64
from pipeline.build_wit import MATCH_BATCH
from pipeline.match import QueryMatcher, naive_match, spacing


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


class CharAutomaton:
    """The same matching with pyahocorasick: padded entries in a character automaton, one pass per spaced
    caption (OpenWIT's first implementation; repeated entries are not needed here)."""

    def __init__(self, queries: list[str]):
        self.automaton = ahocorasick.Automaton()
        for query_id, query in enumerate(queries):
            self.automaton.add_word(f" {query} ", query_id)
        self.automaton.make_automaton()

    def match(self, text: str) -> list[int]:
        return sorted(set(map(itemgetter(1), self.automaton.iter(spacing(text)))))


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
    assert len(set(queries)) == len(queries)
    captions = make_captions(words, args.captions)
    build_s = timed(lambda: QueryMatcher(queries))
    matcher = QueryMatcher(queries)
    aho_build_s = timed(lambda: CharAutomaton(queries))
    aho = CharAutomaton(queries)

    sample = captions[: args.naive_captions]
    for caption in sample:
        expected = naive_match(caption, queries)
        assert matcher.match(caption) == expected == aho.match(caption), caption
    batches = [captions[i:i + MATCH_BATCH] for i in range(0, len(captions), MATCH_BATCH)]
    assert [ids for batch in batches for ids in matcher.match_many(batch)] == [aho.match(c) for c in captions]

    # Results are dropped as they come, as a pipeline stage passes them on: holding 100k result lists would
    # make Python's cyclic GC rescan the whole heap (~0.1 s each time, with Beam imported) several times a run.
    contenders = {
        f"QueryMatcher.match_many, batches of {MATCH_BATCH} (the pipeline)":
            lambda: deque(map(matcher.match_many, batches), maxlen=0),
        "QueryMatcher.match, one call per caption": lambda: deque(map(matcher.match, captions), maxlen=0),
        "pyahocorasick character automaton": lambda: deque(map(aho.match, captions), maxlen=0),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.runs):  # interleaved, so that a noisy minute hits every contender alike
        for name, run in contenders.items():
            times[name].append(timed(run))
    naive = [timed(lambda: [naive_match(c, queries) for c in sample]) for _ in range(max(3, args.runs // 2))]
    naive_rate = len(sample) / statistics.median(naive)
    rates = {name: args.captions / statistics.median(runs) for name, runs in times.items()}
    aho_rate = rates["pyahocorasick character automaton"]
    matches = sum(map(len, matcher.match_many(captions[:10_000]))) / min(10_000, len(captions))
    length = sum(map(len, captions)) / len(captions)

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"machine: {model}, {platform.python_version()}, one process (one core)")
    print(f"queries: {len(queries):,} ({len(words):,} words + bigrams); captions: {args.captions:,} "
          f"({length:.0f} characters, {matches:.1f} matched queries each)")
    print(f"build: QueryMatcher {build_s:.1f} s, pyahocorasick {aho_build_s:.1f} s")
    for name, rate in rates.items():
        print(f"{name}: {rate:,.0f} captions/s = {rate / naive_rate:,.0f}x naive, {rate / aho_rate:.2f}x "
              f"pyahocorasick  (runs: {', '.join(f'{t:.2f}' for t in times[name])} s)")
    print(f"naive loop (MetaCLIP): {naive_rate:,.1f} captions/s  (median of {len(naive)}, {len(sample)} captions)")


if __name__ == "__main__":
    main()
