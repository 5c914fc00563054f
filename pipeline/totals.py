"""The dataset's totals, written once at the end: `stats.json` (adds up: candidates = kept + Σ rejected),
`sizes.json` (samples per shard, as open_clip reads it), `queries.parquet` (per query: candidates, selected,
kept), `overlap/{eval_set}.parquet`, and `report.html`, the dataset card."""

import html
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
    """overlap/{eval_set}.parquet from all the matches of one eval set; returns (eval set, matches)."""
    eval_set, matches = eval_set_and_matches
    table = overlap_table(matches)
    _write_parquet(overlap_path(output, eval_set), table)
    return eval_set, table.num_rows


def write_totals(output: str, queries: list[str], n_candidates: int, reject_counts: dict, shard_stats: list[dict],
                 query_candidates: dict, query_selected: dict, query_kept: dict, overlap_counts: dict) -> dict:
    """Everything here is small: one entry per shard, per query, per (stage, reason) or per eval set; the
    per-sample data was summed by Beam combines before it got here."""
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

    top = sorted(((query_kept.get(i, 0), query_candidates.get(i, 0), queries[i]) for i in ids), reverse=True)
    _write(FileSystems.join(output, "report.html"), render_report(stats, top[:50], overlap_counts).encode())
    return stats


def render_report(stats: dict, top_queries: list, overlaps: dict[str, int]) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(stage)}</td><td>{esc(reason)}</td><td>{n}</td></tr>"
        for stage, reasons in stats["rejected"].items() for reason, n in reasons.items()
    )
    queries = "".join(f"<tr><td>{esc(q)}</td><td>{c}</td><td>{k}</td></tr>" for k, c, q in top_queries)
    evals = "".join(f"<tr><td>{esc(name)}</td><td>{n}</td></tr>" for name, n in sorted(overlaps.items()))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>OpenWIT dataset card</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px}}</style></head><body>
<h1>OpenWIT dataset card</h1>
<p>{stats['candidates']} candidate pairs read; {stats['kept']} kept in {stats['shards']} shards;
{stats['rejected_total']} rejected ({'the counts add up' if stats['adds_up'] else 'THE COUNTS DO NOT ADD UP'}).</p>
<h2>Rejected, by stage and reason</h2>
<table><tr><th>stage</th><th>reason</th><th>count</th></tr>{rows}</table>
<h2>Queries with most kept samples</h2>
<table><tr><th>query</th><th>candidates</th><th>kept</th></tr>{queries}</table>
<h2>Evaluation-set overlap</h2>
<table><tr><th>eval set</th><th>matches</th></tr>{evals or '<tr><td colspan=2>none checked or found</td></tr>'}</table>
</body></html>
"""
