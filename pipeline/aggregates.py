"""The numbers behind the dataset card: `OUT/aggregates.json`, computed from the output folder alone.

It reads `stats.json`, `queries.parquet`, `overlap/*.parquet` and each shard's `_stats.json`, whose `card`
field the shard writer filled with the shard's fixed-bin histograms, host counts and thumbnail candidates
(pipeline/shard_card.py): it never streams every shard parquet, so a 400M-sample build (40k shards) gets its
card from 40k small JSONs, plus the captions of a few shards for the language sample. A shard whose
_stats.json has no card (an older build) is summarised from its parquet, the same way. Memory does not grow
with the build. Because it needs nothing but the output folder, `openwit report OUT` works on a finished
remote build (gs://, s3://) as well as at the end of a local one.
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
from pipeline import shard_card
from pipeline.shard_card import CAPTION_EDGES, SIDE_EDGES

# The flow's stages in order (DESIGN.md §1); a stage with no rejects still shows in the funnel.
FUNNEL_STAGES = ("caption", "match", "dedup", "balance", "fetch", "image", "decontaminate")
# Rows per batch read from an overlap parquet: big enough for pyarrow's vectorised kernels, small in memory.
BATCH_ROWS = 65_536
# Shard summaries read at once: remote reads wait on the network, so threads overlap them.
SCAN_THREADS = min(8, os.cpu_count() or 1)
# Hosts tracked at once. Shards are grouped by host, so a host's rows arrive together and a pruned host is a
# small one; pruning keeps the larger half, so the top hosts shown are exact unless a build has >50k big hosts.
HOST_CAPACITY = 50_000
LANGUAGE_SAMPLE = 2_000  # kept captions whose language is detected (lingua), spread across shards
LANGUAGE_SHARDS = 64  # shards whose captions that sample is read from
THUMBNAILS = 24  # sample images in the card's grid, one per stratum of queries, from head to tail
TOP_ROWS = 20  # rows in the head, tail and host tables
CURVE_POINTS = 300  # log-spaced ranks kept of each per-query curve, so 500k queries draw as a small chart


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


def thumbnail_strata(output: str, n: int = THUMBNAILS) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """The grid's strata: queries with a kept sample, ordered head to tail by kept count and cut into n strata
    of equal size. Returns the stratum of each query id (-1: none) and, per stratum, its queries' (id, name)."""
    with FileSystems.open(FileSystems.join(output, "queries.parquet")) as f:
        table = pq.read_table(f, columns=["query_id", "query", "kept"])
    kept = table.column("kept").to_numpy()
    ids = table.column("query_id").to_numpy().astype(np.int64)
    with_sample = np.flatnonzero(kept > 0)
    ordered = with_sample[np.lexsort((with_sample, -kept[with_sample]))]
    stratum_of = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, np.int64)
    names = dict(zip(ids.tolist(), table.column("query").to_pylist()))
    for stratum, members in enumerate(np.array_split(ordered, min(n, len(ordered))) if len(ordered) else []):
        stratum_of[ids[members]] = stratum
    return stratum_of, names


def _shard_card(shard: int, path: str) -> dict:
    """The shard's card summary from its _stats.json; computed from its parquet when an older build's
    _stats.json has none (or is missing), the same way the shard writer computes it."""
    stats_path = path[: -len(".parquet")] + "_stats.json"
    if FileSystems.exists(stats_path):
        card = _read_json(stats_path).get("card")
        if card is not None:
            return card
    with FileSystems.open(path) as f:
        return shard_card.summarize(pq.read_table(f, columns=shard_card.COLUMNS))


class CardMerge:
    """The shards' card summaries added up; every field is bounded in size, whatever the number of shards."""

    def __init__(self, stratum_of: np.ndarray, query_names: dict[int, str]):
        self.sides = {name: np.zeros(len(SIDE_EDGES) - 1, np.int64) for name in shard_card.SIDES}
        self.caption_chars = np.zeros(len(CAPTION_EDGES) - 1, np.int64)
        self.hosts: dict[str, list[int]] = {}  # host -> [attempted, failed]
        self.hosts_other = [0, 0]  # hosts past a shard's cap
        self.hosts_pruned = False
        self.stratum_of, self.query_names = stratum_of, query_names
        self.thumbnails: dict[int, tuple] = {}  # stratum -> ((rank, key), sample)

    def add(self, shard: int, card: dict) -> None:
        for name, histogram in self.sides.items():
            histogram += card["sides"][name]
        self.caption_chars += card["caption_chars"]
        for host, attempted, failed in card["hosts"]:
            counts = self.hosts.setdefault(host, [0, 0])
            counts[0], counts[1] = counts[0] + attempted, counts[1] + failed
        self.hosts_other = [a + b for a, b in zip(self.hosts_other, card["hosts_other"])]
        self.hosts_pruned |= card["hosts_other"][0] > 0
        if len(self.hosts) > HOST_CAPACITY:
            keep = sorted(self.hosts.items(), key=lambda kv: (-kv[1][0], kv[0]))[:HOST_CAPACITY // 2]
            self.hosts, self.hosts_pruned = dict(keep), True
        for candidate in card["thumbnails"]:
            self._offer(shard, candidate)

    def _offer(self, shard: int, candidate: dict) -> None:
        """The candidate with the lowest stable hash wins each stratum its queries fall in: the same picks
        however the shards are read."""
        order = (int(candidate["rank"]), candidate["key"])
        for query in sorted(candidate["queries"]):
            if not 0 <= query < len(self.stratum_of) or self.stratum_of[query] < 0:
                continue
            stratum = int(self.stratum_of[query])
            if stratum not in self.thumbnails or order < self.thumbnails[stratum][0]:
                self.thumbnails[stratum] = (order, {
                    "shard": shard, "key": candidate["key"], "query": self.query_names[query],
                    "caption": candidate["caption"], "url": candidate["url"]})

    def hosts_table(self) -> list[dict]:
        top = sorted(self.hosts.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP_ROWS]
        return [{"host": h, "attempted": a, "failed": f, "failure_rate": f / a if a else 0.0}
                for h, (a, f) in top]


def language_sample(shards: list[tuple[int, str]]) -> list[str]:
    """About LANGUAGE_SAMPLE kept captions from at most LANGUAGE_SHARDS shards spread over the build (only
    their caption and status columns are read), evenly spaced within each shard so the sample spreads over
    the shard's hosts, not its first rows."""
    if not shards:
        return []
    positions = np.unique(np.linspace(0, len(shards) - 1, min(len(shards), LANGUAGE_SHARDS)).round().astype(int))
    per_shard = -(-LANGUAGE_SAMPLE // len(positions))

    def read(position):
        with FileSystems.open(shards[position][1]) as f:
            table = pq.read_table(f, columns=["caption", "status"])
        rows = np.flatnonzero(pc.equal(table.column("status"), "success").to_numpy(zero_copy_only=False))
        picked = rows[:: max(1, len(rows) // per_shard)][:per_shard]
        return table.column("caption").take(pa.array(picked, pa.int64())).to_pylist()

    with concurrent.futures.ThreadPoolExecutor(SCAN_THREADS) as pool:
        return [caption for captions in pool.map(read, positions.tolist()) for caption in captions]


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
    agg, shards = scan(output, t)
    return add_languages(agg, language_sample(shards))


def add_languages(agg: dict, captions: list[str]) -> dict:
    """The languages of the sampled captions, in the place scan() kept for them."""
    agg["languages"] = {"sample": len(captions), "counts": detect_languages(captions)}
    return agg


def scan(output: str, t: float | None = None) -> tuple[dict, list[tuple[int, str]]]:
    """compute() but the language sample, which is the slow part (lingua): the aggregates with "languages"
    still None, and the shards (id, parquet path) to take the sample from. The report draws the other charts
    meanwhile."""
    stats_path = FileSystems.join(output, "stats.json")
    if not FileSystems.exists(stats_path):
        raise InputError(f"{output!r} holds no stats.json: give the output folder of a finished `openwit build`")
    stats = _read_json(stats_path)
    shards = [(s, p) for p in _matching(FileSystems.join(output, "shards", "*.parquet"))
              if (s := _shard_id(p)) is not None]
    merged = CardMerge(*thumbnail_strata(output))
    window = 4 * SCAN_THREADS
    with concurrent.futures.ThreadPoolExecutor(SCAN_THREADS) as pool:
        # A window at a time, added in shard order: bounded memory, and the same result on every run.
        for start in range(0, len(shards), window):
            part = shards[start:start + window]
            for (shard, _), card in zip(part, pool.map(lambda sp: _shard_card(*sp), part)):
                merged.add(shard, card)
    return {
        "stats": stats,
        "funnel": funnel(stats),
        "queries": query_distribution(output, t),
        "caption_chars": {"edges": CAPTION_EDGES, "counts": merged.caption_chars.tolist()},
        "languages": None,  # add_languages
        "image_sides": {"edges": SIDE_EDGES, **{k: v.tolist() for k, v in merged.sides.items()}},
        "hosts": {"top": merged.hosts_table(), "tracked": len(merged.hosts), "pruned": merged.hosts_pruned,
                  "other": merged.hosts_other},
        "thumbnails": [merged.thumbnails[s][1] for s in sorted(merged.thumbnails)],
        "decontamination": decontamination(output),
        "overlap_reports": overlap_reports(output),
    }, shards


def write(output: str, aggregates: dict) -> None:
    with FileSystems.create(FileSystems.join(output, "aggregates.json")) as f:
        f.write(json.dumps(aggregates, indent=1, ensure_ascii=False).encode())


def previous_t(output: str) -> float | None:
    """The t recorded by the build's own report, so `openwit report OUT` keeps marking it."""
    path = FileSystems.join(output, "aggregates.json")
    return _read_json(path)["queries"]["t"] if FileSystems.exists(path) else None
