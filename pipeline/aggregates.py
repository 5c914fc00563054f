"""The numbers behind the dataset card: `OUT/aggregates.json`, computed from the output folder alone.

It reads `stats.json`, `queries.parquet`, `overlap/*.parquet` and a few columns of the shard parquets, one
batch of rows at a time, and keeps only fixed-size histograms, a bounded host table and small samples: its
memory does not grow with the build (a 400M-sample build has 40k shard parquets; the card itself then reads
only this file and a handful of thumbnails). Because it needs nothing but the output folder, `openwit report
OUT` works on a finished remote build (gs://, s3://) as well as at the end of a local one.
"""

import concurrent.futures
import json
import os
import posixpath
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from openwit.errors import InputError
from openwit.hashing import stable_hash64

# The flow's stages in order (DESIGN.md §1); a stage with no rejects still shows in the funnel.
FUNNEL_STAGES = ("caption", "match", "dedup", "balance", "fetch", "image", "decontaminate")
# Rows per batch read from a shard parquet: big enough for pyarrow's vectorised kernels, small in memory.
BATCH_ROWS = 65_536
# Shards read at once. Parquet decoding and the compute kernels release the GIL, so threads can use a
# many-core launcher; memory is this many shards' columns, whatever the number of shards.
SCAN_THREADS = min(8, os.cpu_count() or 1)
# Hosts tracked at once. Shards are grouped by host, so a host's rows arrive together and a pruned host is a
# small one; pruning keeps the larger half, so the top hosts shown are exact unless a build has >50k big hosts.
HOST_CAPACITY = 50_000
LANGUAGE_SAMPLE = 2_000  # kept captions whose language is detected (lingua), spread across shards
THUMBNAILS = 24  # sample images in the card's grid, one per query, queries spread from head to tail
TOP_ROWS = 20  # rows in the head, tail and host tables
CURVE_POINTS = 300  # log-spaced ranks kept of each per-query curve, so 500k queries draw as a small chart
# Image sides and caption lengths are binned on fixed edges, so per-batch histograms simply add up.
SIDE_EDGES = [0] + [2 ** i for i in range(3, 15)] + [2 ** 31]
CAPTION_EDGES = list(range(0, 510, 10)) + [2 ** 31]
# The host of an http(s) URL, as pyarrow's regex kernel extracts it (no per-row Python at 400M rows).
HOST_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^:/?#]*)"
SHARD_COLUMNS = ["key", "url", "caption", "status", "width", "height", "original_width", "original_height",
                 "queries"]


def _read_json(path: str):
    with FileSystems.open(path) as f:
        return json.load(f)


def _matching(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def funnel(stats: dict) -> list[list]:
    """Candidates left after each stage, from candidates down to kept. Read-stage rejects and shard-level
    internal errors show as their own steps when there are any; so does a stage this list does not know."""
    rejected = {stage: sum(reasons.values()) for stage, reasons in stats["rejected"].items()}
    stages = [s for s in ("read",) if rejected.get(s)] + list(FUNNEL_STAGES)
    stages += sorted(s for s in rejected if s not in stages)
    left, steps = stats["candidates"], [["candidates", stats["candidates"]]]
    for stage in stages:
        left -= rejected.get(stage, 0)
        steps.append([stage, left])
    steps.append(["kept", stats["kept"]])
    return steps


def _curve(values: np.ndarray) -> list[list[int]]:
    """(rank, count) of the positive counts sorted high to low, at log-spaced ranks (first and last included)."""
    ordered = np.sort(values[values > 0])[::-1]
    if not len(ordered):
        return []
    ranks = np.unique(np.geomspace(1, len(ordered), CURVE_POINTS).round().astype(np.int64))
    return [[int(r), int(ordered[r - 1])] for r in ranks]


def query_distribution(output: str, t: float | None) -> dict:
    """Per-query candidates (before balancing), selected (after) and kept (after fetching), from
    queries.parquet: one row per query, so bounded by the query list (<= 500k), not by the build."""
    with FileSystems.open(FileSystems.join(output, "queries.parquet")) as f:
        table = pq.read_table(f, columns=["query", "candidates", "selected", "kept"])
    cand, sel, kept = (table.column(c).to_numpy() for c in ("candidates", "selected", "kept"))

    def rows(order):
        queries = table.column("query").take(pa.array(order)).to_pylist()
        return [{"query": q, "candidates": int(cand[i]), "selected": int(sel[i]), "kept": int(kept[i])}
                for q, i in zip(queries, order)]

    matched = np.flatnonzero(cand > 0)
    head = matched[np.lexsort((matched, -cand[matched]))][:TOP_ROWS]
    tail = matched[np.lexsort((matched, cand[matched]))][:TOP_ROWS]
    return {
        "t": t,
        "queries": len(cand),
        "matched": len(matched),
        "at_t": None if t is None else int((cand > t).sum()),  # balancing cut these down to about t
        "without_sample": int(((cand > 0) & (kept == 0)).sum()),
        "never_matched": int((cand == 0).sum()),
        "before": _curve(cand), "after": _curve(sel), "kept": _curve(kept),
        "head": rows(head), "tail": rows(tail),
    }


def thumbnail_queries(output: str, n: int = THUMBNAILS) -> dict[int, tuple[int, str]]:
    """query id -> (its position in the grid, the query): queries with a kept sample, ordered head to tail by
    kept count and cut into n strata of equal size; from each, the query with the lowest stable hash, so a
    build always shows the same queries."""
    with FileSystems.open(FileSystems.join(output, "queries.parquet")) as f:
        table = pq.read_table(f, columns=["query_id", "query", "kept"])
    kept = table.column("kept").to_numpy()
    ids = table.column("query_id").to_numpy()
    with_sample = np.flatnonzero(kept > 0)
    ordered = with_sample[np.lexsort((with_sample, -kept[with_sample]))]
    queries = table.column("query")
    chosen = {}
    for stratum in np.array_split(ordered, min(n, len(ordered))) if len(ordered) else []:
        names = queries.take(pa.array(stratum)).to_pylist()
        _, best, name = min(zip((stable_hash64("thumbnail", q) for q in names), stratum.tolist(), names))
        chosen[int(ids[best])] = (len(chosen), name)
    return chosen


class ShardScan:
    """Everything taken from the shard parquets in one streaming pass; every field is bounded in size."""

    def __init__(self, thumbnail_queries: dict[int, tuple[int, str]], language_per_shard: int, language_stride: int):
        self.sides = {name: np.zeros(len(SIDE_EDGES) - 1, np.int64)
                      for name in ("width", "height", "original_width", "original_height")}
        self.caption_chars = np.zeros(len(CAPTION_EDGES) - 1, np.int64)
        self.hosts: dict[str, list[int]] = {}  # host -> [attempted, failed]
        self.hosts_pruned = False
        self.thumbnail_queries = thumbnail_queries
        self.thumbnails: dict[int, tuple] = {}  # query id -> (hash, sample)
        self.language_per_shard, self.language_stride = language_per_shard, language_stride
        self.language_captions: list[str] = []

    def add_shard(self, position: int, shard: int, path: str) -> None:
        take_captions = self.language_per_shard if position % self.language_stride == 0 else 0
        with FileSystems.open(path) as f:
            parquet = pq.ParquetFile(f)
            step = max(1, parquet.metadata.num_rows // max(1, take_captions))
            offset = 0
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=SHARD_COLUMNS):
                self._add_batch(shard, batch, offset, step, take_captions)
                offset += batch.num_rows

    def _add_batch(self, shard: int, batch: pa.RecordBatch, offset: int, step: int, take_captions: int) -> None:
        ok = pc.equal(batch.column("status"), "success")
        hosts = pc.utf8_lower(pc.struct_field(pc.extract_regex(batch.column("url"), HOST_PATTERN), "host"))
        self._count_hosts(hosts, pc.invert(ok))
        good = batch.filter(ok)
        # Original sizes of every decoded image; written sizes of the samples written (an eval duplicate
        # dropped by decontamination was resized, but never written).
        for name, histogram in self.sides.items():
            rows = batch if name.startswith("original_") else good
            values = rows.column(name).drop_null().to_numpy(zero_copy_only=False)
            histogram += np.histogram(values, SIDE_EDGES)[0]
        captions = good.column("caption")
        self.caption_chars += np.histogram(pc.utf8_length(captions).to_numpy(zero_copy_only=False),
                                           CAPTION_EDGES)[0]
        if take_captions:
            # Every step-th row of the shard, so the sample spreads over the shard's hosts, not its first rows.
            rows = np.flatnonzero(ok.to_numpy(zero_copy_only=False))
            picked = rows[(rows + offset) % step == 0][:take_captions]
            self.language_captions += batch.column("caption").take(pa.array(picked)).to_pylist()
        if self.thumbnail_queries:
            self._pick_thumbnails(shard, good)

    def _count_hosts(self, hosts: pa.Array, failed: pa.Array) -> None:
        for name, column in (("attempted", hosts), ("failed", hosts.filter(failed))):
            slot = 0 if name == "attempted" else 1
            for entry in pc.value_counts(column.fill_null("(no host)")).to_pylist():
                self.hosts.setdefault(entry["values"], [0, 0])[slot] += entry["counts"]
        self._prune_hosts()

    def _prune_hosts(self) -> None:
        if len(self.hosts) > HOST_CAPACITY:
            keep = sorted(self.hosts.items(), key=lambda kv: (-kv[1][0], kv[0]))[:HOST_CAPACITY // 2]
            self.hosts, self.hosts_pruned = dict(keep), True

    def _pick_thumbnails(self, shard: int, good: pa.RecordBatch) -> None:
        """The sample with the lowest stable hash of each chosen query: the same picks however shards are read."""
        queries = good.column("queries")
        flat = pc.list_flatten(queries)
        hits = pc.is_in(flat, pa.array(list(self.thumbnail_queries), pa.int32()))
        if not pc.any(hits).as_py():
            return
        parents = pc.list_parent_indices(queries).filter(hits).to_pylist()
        for row, query in zip(parents, flat.filter(hits).to_pylist()):
            key = good.column("key")[row].as_py()
            rank = stable_hash64("thumbnail", key)
            if query not in self.thumbnails or rank < self.thumbnails[query][0]:
                self.thumbnails[query] = (rank, {
                    "shard": shard, "key": key, "query": self.thumbnail_queries[query][1],
                    "caption": good.column("caption")[row].as_py(), "url": good.column("url")[row].as_py()})

    def merge(self, other: "ShardScan") -> None:
        """Add another scan (of other shards) into this one."""
        for name, histogram in self.sides.items():
            histogram += other.sides[name]
        self.caption_chars += other.caption_chars
        for host, (attempted, failed) in other.hosts.items():
            counts = self.hosts.setdefault(host, [0, 0])
            counts[0], counts[1] = counts[0] + attempted, counts[1] + failed
        self.hosts_pruned |= other.hosts_pruned
        self._prune_hosts()
        for query, pick in other.thumbnails.items():
            if query not in self.thumbnails or pick[0] < self.thumbnails[query][0]:
                self.thumbnails[query] = pick
        self.language_captions += other.language_captions

    def hosts_table(self) -> list[dict]:
        top = sorted(self.hosts.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP_ROWS]
        return [{"host": h, "attempted": a, "failed": f, "failure_rate": f / a if a else 0.0}
                for h, (a, f) in top]


def detect_languages(captions: list[str]) -> dict[str, int]:
    """Caption languages of the sample, by lingua over the frequent web languages the caption filter knows.
    Low-accuracy mode: a distribution over 2,000 captions does not need the 20 s the full models take to load."""
    if not captions:
        return {}
    from pipeline.captions import build_language_detector

    detector = build_language_detector((), low_accuracy=True)
    found = Counter()
    for language in detector.detect_languages_in_parallel_of(captions):
        found[language.iso_code_639_1.name.lower() if language else "unknown"] += 1
    return dict(found.most_common())


def decontamination(output: str) -> list[dict]:
    """Per eval set: eval items with a match, samples matched, and distinct samples by method; the sets are
    bounded by the overlap (small by nature), and the file is read a batch at a time."""
    sets = []
    for path in _matching(FileSystems.join(output, "overlap", "*.parquet")):
        name = posixpath.basename(path)[: -len(".parquet")]
        items, samples, by_method = set(), set(), {}
        with FileSystems.open(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(BATCH_ROWS, columns=["eval_id", "sample_key", "method"]):
                ids, keys, methods = (batch.column(c).to_pylist() for c in ("eval_id", "sample_key", "method"))
                items.update(ids)
                samples.update(keys)
                for key, method in zip(keys, methods):
                    by_method.setdefault(method, set()).add(key)
        sets.append({"eval_set": name, "eval_items_matched": len(items), "samples_matched": len(samples),
                     "samples_by_method": {m: len(k) for m, k in sorted(by_method.items())}})
    return sets


def overlap_reports(output: str) -> list[str]:
    """Overlap reports, relative to OUT: `openwit overlap` writes overlap_report/report.md by default; other
    reports (html or md) may sit beside the overlap records."""
    found = []
    for folder in ("overlap", "overlap_report"):
        found += [f"{folder}/{posixpath.basename(p)}" for p in _matching(FileSystems.join(output, folder, "*"))
                  if p.rsplit(".", 1)[-1] in ("html", "md")]
    return found


def _shard_id(path: str) -> int | None:
    stem = posixpath.basename(path)[: -len(".parquet")]
    return int(stem) if stem.isdigit() else None


def compute(output: str, t: float | None = None) -> dict:
    """aggregates.json's content. t is the build's balancing threshold (max_per_query x oversample)."""
    stats_path = FileSystems.join(output, "stats.json")
    if not FileSystems.exists(stats_path):
        raise InputError(f"{output!r} holds no stats.json: give the output folder of a finished `openwit build`")
    stats = _read_json(stats_path)
    shards = [(s, p) for p in _matching(FileSystems.join(output, "shards", "*.parquet"))
              if (s := _shard_id(p)) is not None]
    per_shard = max(1, -(-LANGUAGE_SAMPLE // max(1, len(shards))))
    settings = (thumbnail_queries(output), per_shard, max(1, len(shards) // LANGUAGE_SAMPLE))

    def scan_one(position_and_shard):
        position, (shard, path) = position_and_shard
        part = ShardScan(*settings)
        part.add_shard(position, shard, path)
        return part

    scan, items, window = ShardScan(*settings), list(enumerate(shards)), 2 * SCAN_THREADS
    with concurrent.futures.ThreadPoolExecutor(SCAN_THREADS) as pool:
        # A window at a time, merged in shard order: bounded memory, and the same result on every run.
        for start in range(0, len(items), window):
            for part in pool.map(scan_one, items[start:start + window]):
                scan.merge(part)
    thumbnails = [scan.thumbnails[q] for q in sorted(scan.thumbnails, key=lambda q: scan.thumbnail_queries[q][0])]
    return {
        "stats": stats,
        "funnel": funnel(stats),
        "queries": query_distribution(output, t),
        "caption_chars": {"edges": CAPTION_EDGES, "counts": scan.caption_chars.tolist()},
        "languages": {"sample": len(scan.language_captions), "counts": detect_languages(scan.language_captions)},
        "image_sides": {"edges": SIDE_EDGES, **{k: v.tolist() for k, v in scan.sides.items()}},
        "hosts": {"top": scan.hosts_table(), "tracked": len(scan.hosts), "pruned": scan.hosts_pruned},
        "thumbnails": [sample for _, sample in thumbnails],
        "decontamination": decontamination(output),
        "overlap_reports": overlap_reports(output),
    }


def write(output: str, aggregates: dict) -> None:
    with FileSystems.create(FileSystems.join(output, "aggregates.json")) as f:
        f.write(json.dumps(aggregates, indent=1, ensure_ascii=False).encode())


def previous_t(output: str) -> float | None:
    """The t recorded by the build's own report, so `openwit report OUT` keeps marking it."""
    path = FileSystems.join(output, "aggregates.json")
    return _read_json(path)["queries"]["t"] if FileSystems.exists(path) else None
