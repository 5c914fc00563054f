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
from pipeline.write_shards import stage_of


def _write(path: str, data: bytes) -> None:
    with FileSystems.create(path) as f:
        f.write(data)


def _write_parquet(path: str, table: pa.Table) -> None:
    with FileSystems.create(path) as f:
        pq.write_table(table, f)


def compute_stats(n_candidates: int, reject_counts: dict, summaries: list[dict]) -> dict:
    rejected = defaultdict(lambda: defaultdict(int))
    for (stage, reason), n in reject_counts.items():
        rejected[stage][reason] += n
    for summary in summaries:
        for reason, n in summary["failed"].items():
            rejected[stage_of(reason)][reason] += n
    kept = sum(s["successes"] for s in summaries)
    rejected_total = sum(n for reasons in rejected.values() for n in reasons.values())
    return {
        "candidates": n_candidates,
        "kept": kept,
        "rejected_total": rejected_total,
        "rejected": {stage: dict(sorted(reasons.items())) for stage, reasons in sorted(rejected.items())},
        "shards": len(summaries),
        "samples_attempted": sum(s["count"] for s in summaries),
        "adds_up": n_candidates == kept + rejected_total,
    }


def write_totals(output: str, queries: list[str], n_candidates: int, reject_counts: dict, summaries: list[dict],
                 query_candidates: dict, query_selected: dict) -> dict:
    summaries = sorted(summaries, key=lambda s: s["shard"])
    stats = compute_stats(n_candidates, reject_counts, summaries)
    _write(FileSystems.join(output, "stats.json"), json.dumps(stats, indent=2).encode())

    sizes = {f"{s['shard']:05d}.tar": s["successes"] for s in summaries}
    # Both places: the output root (our contract) and beside the tars, where open_clip looks for it.
    for folder in (output, FileSystems.join(output, "shards")):
        _write(FileSystems.join(folder, "sizes.json"), json.dumps(sizes, indent=2).encode())

    kept = defaultdict(int)
    for summary in summaries:
        for q, n in summary["query_kept"].items():
            kept[int(q)] += n
    _write_parquet(FileSystems.join(output, "queries.parquet"), pa.table({
        "query_id": pa.array(range(len(queries)), pa.int32()),
        "query": queries,
        "candidates": pa.array([query_candidates.get(i, 0) for i in range(len(queries))], pa.int64()),
        "selected": pa.array([query_selected.get(i, 0) for i in range(len(queries))], pa.int64()),
        "kept": pa.array([kept.get(i, 0) for i in range(len(queries))], pa.int64()),
    }))

    by_eval_set = defaultdict(list)
    for summary in summaries:
        for match in summary["overlap"]:
            by_eval_set[match["eval_set"]].append(match)
    for eval_set, matches in sorted(by_eval_set.items()):
        _write_parquet(overlap_path(output, eval_set), overlap_table(matches))

    top = sorted(((kept.get(i, 0), query_candidates.get(i, 0), q) for i, q in enumerate(queries)), reverse=True)
    _write(FileSystems.join(output, "report.html"), render_report(stats, top[:50], by_eval_set).encode())
    return stats


def render_report(stats: dict, top_queries: list, overlaps: dict) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(stage)}</td><td>{esc(reason)}</td><td>{n}</td></tr>"
        for stage, reasons in stats["rejected"].items() for reason, n in reasons.items()
    )
    queries = "".join(f"<tr><td>{esc(q)}</td><td>{c}</td><td>{k}</td></tr>" for k, c, q in top_queries)
    evals = "".join(f"<tr><td>{esc(name)}</td><td>{len(m)}</td></tr>" for name, m in overlaps.items())
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
