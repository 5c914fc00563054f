"""Lookup speed of the multi-index Hamming search against brute-force numpy popcount, 1M stored hashes.

Both return exactly the same ids (asserted here on a sample of queries), so recall is equal by
construction. Queries are stored codes with a few bits flipped, as a near-duplicate's pHash is. One core.
Single lookups are what `EvalIndex.lookup` does per sample; batch lookups what `EvalIndex.lookup_many` does
per shard. The three timings are interleaved within each run so that load from other processes on a
shared machine hits them alike; medians over runs.

    python bench/bench_dedup_speed.py --size 1000000 --radius 10
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dedup.hamming_index import HammingIndex, brute_force  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--radius", type=int, nargs="+", default=[4, 6, 8, 10])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--brute-queries", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)  # benchmark data only, not a data decision of the pipeline
    codes = rng.integers(0, 2**64 - 1, size=args.size, dtype=np.uint64, endpoint=True)
    flips = np.array([sum(1 << int(b) for b in rng.choice(64, size=rng.integers(0, 6), replace=False))
                      for _ in range(args.queries)], dtype=np.uint64)
    queries = codes[rng.integers(0, args.size, args.queries)] ^ flips
    print("| radius | tables | MIH lookups/s | MIH batch lookups/s | brute force lookups/s | ratio | batch ratio |")
    print("|---|---|---|---|---|---|---|")
    for radius in args.radius:
        index = HammingIndex(codes, radius=radius)
        index.query_many(queries[:2], radius)  # compiles the search kernel before any timing
        for q in queries[:20]:  # equal answers, so equal recall
            assert index.query(int(q), radius)[0].tolist() == brute_force(codes, int(q), radius)[0].tolist()
        mih, batch, brute = [], [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            for q in queries:
                index.query(int(q), radius)
            mih.append(len(queries) / (time.perf_counter() - t))
            t = time.perf_counter()
            index.query_many(queries, radius)
            batch.append(len(queries) / (time.perf_counter() - t))
            t = time.perf_counter()
            for q in queries[:args.brute_queries]:
                brute_force(codes, int(q), radius)
            brute.append(args.brute_queries / (time.perf_counter() - t))
        m, b, bf = statistics.median(mih), statistics.median(batch), statistics.median(brute)
        print(f"| {radius} | {index.tables} | {m:,.0f} | {b:,.0f} | {bf:,.0f} | {m / bf:.0f}× | {b / bf:.0f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
