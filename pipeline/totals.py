"""The dataset's totals, written once at the end: `stats.json` (adds up: candidates = kept + Σ rejected),
`sizes.json` (samples per shard, as open_clip reads it), `queries.parquet` (per query: candidates, selected,
kept) and `overlap/{eval_set}.parquet`. The dataset card, report.html, is drawn from them afterwards
(pipeline/report.py), outside the pipeline, so `openwit report OUT` can redraw it from the folder alone."""

import json
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from dedup.overlap import overlap_path, overlap_table
from openwit.files import write_atomically
from pipeline.write_shards import stage_of


def _write(path: str, data: bytes) -> None:
    write_atomically(path, lambda f: f.write(data))


def _write_parquet(path: str, table: pa.Table) -> None:
    write_atomically(path, lambda f: pq.write_table(table, f))


def compute_stats(n_candidates: int, reject_counts: dict, shard_stats: list[dict]) -> dict:
    rejected = defaultdict(lambda: defaultdict(int))
    for (stage, reason), n in reject_counts.items():
        rejected[stage][reason] += n
    for shard in shard_stats:
        for reason, n in shard["failed"].items():
            rejected[stage_of(reason)][reason] += n
    kept = sum(s["successes"] for s in shard_stats)
    rejected_total = sum(n for reasons in rejected.values() for n in reasons.values())
    return {
        "candidates": n_candidates,
        "kept": kept,
        "rejected_total": rejected_total,
        "rejected": {stage: dict(sorted(reasons.items())) for stage, reasons in sorted(rejected.items())},
        "shards": len(shard_stats),
        "samples_attempted": sum(s["count"] for s in shard_stats),
        "adds_up": n_candidates == kept + rejected_total,
    }


def write_overlap(eval_set_and_matches, output: str) -> tuple:
    """overlap/{eval_set}.parquet from all the matches of one eval set; returns (eval set, counts): eval items
    with a match and samples matched (a match record is one (item, sample, method), so counting records
    would count one leaked image several times)."""
    eval_set, matches = eval_set_and_matches
    table = overlap_table(matches)
    _write_parquet(overlap_path(output, eval_set), table)
    return eval_set, {"items": len(set(table.column("eval_id").to_pylist())),
                      "samples": len(set(table.column("sample_key").to_pylist()))}


def write_totals(output: str, queries: list[str], n_candidates: int, reject_counts: dict, shard_stats: list[dict],
                 query_candidates: dict, query_selected: dict, query_kept: dict, overlap_counts: dict) -> dict:
    """Everything here is small: one entry per shard, per query, per (stage, reason) or per eval set; the
    per-sample data was summed by Beam combines before it got here. overlap_counts is taken so that the
    overlap files are whole before the totals that end the run are written."""
    shard_stats = sorted(shard_stats, key=lambda s: s["shard"])
    stats = compute_stats(n_candidates, reject_counts, shard_stats)
    _write(FileSystems.join(output, "stats.json"), json.dumps(stats, indent=2).encode())

    sizes = {f"{s['shard']:05d}.tar": s["successes"] for s in shard_stats}
    # Both places: the output root (our contract) and beside the tars, where open_clip looks for it.
    for folder in (output, FileSystems.join(output, "shards")):
        _write(FileSystems.join(folder, "sizes.json"), json.dumps(sizes, indent=2).encode())

    ids = range(len(queries))
    _write_parquet(FileSystems.join(output, "queries.parquet"), pa.table({
        "query_id": pa.array(ids, pa.int32()),
        "query": queries,
        "candidates": pa.array([query_candidates.get(i, 0) for i in ids], pa.int64()),
        "selected": pa.array([query_selected.get(i, 0) for i in ids], pa.int64()),
        "kept": pa.array([query_kept.get(i, 0) for i in ids], pa.int64()),
    }))

    return stats
