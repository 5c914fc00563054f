"""Time `openwit report OUT` on a synthetic output folder (default 100 shards x 10k rows, no tars), three ways:

- summaries: shards' _stats.json carry the `card` the shard writer now writes (the card merges small JSONs),
- scan: the same shards with no `card` (an older build: every shard parquet is summarised),
- before: the card code of the main branch before this change (`--before-ref`, streams every shard parquet),
  run as `openwit report` from a `git archive` of that ref.

Medians of --runs runs each, interleaved. Usage: python bench/bench_report.py [--shards 100] [--rows 10000]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pipeline import shard_card  # noqa: E402
from pipeline.write_shards import PARQUET_SCHEMA  # noqa: E402

QUERIES = 5_000


def shard_table(shard: int, rows: int, rng: np.random.Generator) -> pa.Table:
    ok = rng.random(rows) > 0.3
    hosts = rng.integers(0, 40, rows)
    width = rng.integers(100, 3000, rows)
    height = rng.integers(100, 3000, rows)
    caption_len = rng.integers(5, 200, rows)
    words = "a photo of the red bus near a river in spring "
    captions = [(words * 5)[:n] for n in caption_len.tolist()]
    queries = rng.integers(0, QUERIES, rows)
    failed = ~ok
    columns = {
        "key": [f"{shard:05d}{i:04d}" for i in range(rows)],
        "url": [f"https://h{shard}-{h}.example.com/img/{i}.jpg" for i, h in enumerate(hosts.tolist())],
        "caption": captions,
        "status": pa.array(np.where(ok, "success", "failed")),
        "error_message": pa.array(np.where(ok, None, "http_404")),
        "width": pa.array(np.minimum(width, 512), mask=failed),
        "height": pa.array(np.minimum(height, 512), mask=failed),
        "original_width": pa.array(width), "original_height": pa.array(height),
        "queries": pa.array([[q] for q in queries.tolist()], pa.list_(pa.int32())),
        "page_url": [""] * rows,
    }
    return pa.table({f.name: pa.array(columns[f.name]).cast(f.type) if f.name in columns else pa.nulls(rows, f.type)
                     for f in PARQUET_SCHEMA}, schema=PARQUET_SCHEMA)


def write_output(out: str, shards: int, rows: int, with_cards: bool) -> None:
    os.makedirs(os.path.join(out, "shards"))
    rng = np.random.default_rng(0)
    kept_per_query = np.zeros(QUERIES, np.int64)
    kept = 0
    for s in range(shards):
        table = shard_table(s, rows, rng)
        pq.write_table(table, os.path.join(out, "shards", f"{s:05d}.parquet"))
        good = table.filter(pa.compute.equal(table.column("status"), "success"))
        kept += good.num_rows
        np.add.at(kept_per_query, pa.compute.list_flatten(good.column("queries")).to_numpy(), 1)
        stats = {"shard": s, "count": rows, "successes": good.num_rows, "failed": {"http_404": rows - good.num_rows}}
        if with_cards:
            stats["card"] = shard_card.summarize(table)
        with open(os.path.join(out, "shards", f"{s:05d}_stats.json"), "w") as f:
            json.dump(stats, f)
    total = shards * rows
    with open(os.path.join(out, "stats.json"), "w") as f:
        json.dump({"candidates": total, "kept": kept, "rejected_total": total - kept, "adds_up": True,
                   "rejected": {"fetch": {"http_404": total - kept}}, "shards": shards}, f)
    pq.write_table(pa.table({
        "query_id": pa.array(range(QUERIES), pa.int32()), "query": [f"q{i}" for i in range(QUERIES)],
        "candidates": pa.array(kept_per_query * 2), "selected": pa.array(kept_per_query * 2),
        "kept": pa.array(kept_per_query)}), os.path.join(out, "queries.parquet"))


def timed(code_root: str, out: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from pipeline import report; "
                    "sys.exit(report.main(sys.argv[1:]))", out, "--max-per-query", "20"],
                   cwd=code_root, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before-ref", default="main")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-report-")
    try:
        cards, older = os.path.join(work, "cards"), os.path.join(work, "older")
        write_output(cards, args.shards, args.rows, True)
        write_output(older, args.shards, args.rows, False)
        before_root = os.path.join(work, "before")
        os.makedirs(before_root)
        archive = subprocess.run(["git", "archive", args.before_ref], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", before_root], input=archive.stdout, check=True)
        times = {"summaries": [], "scan": [], "before": []}
        for _ in range(args.runs):
            times["summaries"].append(timed(ROOT, cards))
            times["scan"].append(timed(ROOT, older))
            times["before"].append(timed(before_root, older))
        print(f"{args.shards} shards x {args.rows} rows, {os.cpu_count()} cores, medians of {args.runs} runs:")
        medians = {k: statistics.median(v) for k, v in times.items()}
        for name, seconds in medians.items():
            print(f"  {name:10s} {seconds:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times[name])})")
        print(f"  before / summaries: {medians['before'] / medians['summaries']:.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
