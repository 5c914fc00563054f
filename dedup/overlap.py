"""Overlap records: which output sample matched which eval item, one Parquet file per eval set.

The shard DoFn calls `overlap_rows` for each sample it writes and emits the rows; they are written to
`OUT/overlap/{eval_set}.parquet` (pipeline/), and the overlap report splits each eval set into
Overlap and Clean from them, as the CLIP paper's appendix C does.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:  # only a type here: importing the eval index (datasketch, scipy) costs every build ~0.5 s
    from dedup.eval_index import OverlapMatch

OVERLAP_SCHEMA = pa.schema([
    ("eval_set", pa.string()),
    ("eval_id", pa.string()),
    ("sample_key", pa.string()),
    ("url", pa.string()),
    ("method", pa.string()),
    ("distance", pa.float64()),
    ("verification", pa.string()),  # how the match was confirmed (see dedup/eval_index.py, VERIFICATION)
    ("score", pa.float64()),  # the verification's score
])


def overlap_rows(matches: Iterable["OverlapMatch"], sample_key: str, url: str) -> list[dict]:
    """One record per match of a sample, in OVERLAP_SCHEMA's columns."""
    return [{"eval_set": m.eval_set, "eval_id": m.eval_id, "sample_key": sample_key, "url": url,
             "method": m.method, "distance": float(m.distance), "verification": m.verification,
             "score": float(m.score)} for m in matches]


def overlap_path(out_dir: str, eval_set: str) -> str:
    """Where an eval set's overlap records go inside the output folder (any Beam filesystem path)."""
    return f"{out_dir.rstrip('/')}/overlap/{eval_set}.parquet"


def overlap_table(rows: Iterable[dict]) -> pa.Table:
    """The rows as an Arrow table, sorted by eval item then sample so reruns write identical files."""
    rows = sorted(rows, key=lambda r: (r["eval_set"], r["eval_id"], r["sample_key"], r["method"]))
    return pa.Table.from_pylist(rows, schema=OVERLAP_SCHEMA)
