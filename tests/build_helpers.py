"""Helpers for tests that run the whole pipeline: build a dataset, read its files back."""

import glob
import json
import os

import pyarrow.parquet as pq

from pipeline import build_wit


def build(pairs, queries, output, *extra):
    argv = ["--pairs", pairs, "--queries", queries, "--output", str(output), "--samples-per-shard", "40",
            "--allow-private-addresses", "--image-size", "64", *extra]
    if not any(arg.startswith("--direct_num_workers") for arg in extra):
        argv.append("--direct_num_workers=1")  # worker processes cost ~5-15 s to start: tests ask for them by name
    assert build_wit.main(argv) == 0
    return str(output)


def shard_files(output, pattern="*"):
    return sorted(glob.glob(os.path.join(output, "shards", pattern)))


def read_bytes(paths):
    return {os.path.basename(p): open(p, "rb").read() for p in paths}


def load_stats(output):
    with open(os.path.join(output, "stats.json")) as f:
        return json.load(f)


def shard_rows(output):
    return [row for path in shard_files(output, "*.parquet") for row in pq.read_table(path).to_pylist()]


def reject_rows(output):
    return [row for path in sorted(glob.glob(os.path.join(output, "rejects", "*.parquet")))
            for row in pq.read_table(path).to_pylist()]


def dataset_bytes(output):
    """Every file of the dataset, but the per-shard durations in _stats.json (wall-clock time, not data)."""
    files = {}
    for path in sorted(glob.glob(os.path.join(output, "**", "*"), recursive=True)):
        if os.path.isfile(path) and path.endswith("_stats.json"):
            stats = json.load(open(path))
            stats.pop("duration_s")
            files[os.path.relpath(path, output)] = json.dumps(stats, sort_keys=True).encode()
        elif os.path.isfile(path):
            files[os.path.relpath(path, output)] = open(path, "rb").read()
    return files
