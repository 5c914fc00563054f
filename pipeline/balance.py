"""Balancing: at most about t pairs per query, as in CLIP's WIT (t = 20,000) and MetaCLIP.

MetaCLIP's rule (metaclip1/curation): with count(q) the number of candidates matching query q over the whole
input, a candidate matching queries Q is kept if, for any q in Q, an independent draw falls below
p(q) = min(1, t / count(q)). Rare queries keep everything; head queries are cut to ~t.
Here each draw is a stable hash of (url, query id) instead of `random`, so a rerun keeps the same pairs.

Balancing runs before download, so t is raised by `--oversample` to cover expected fetch failures.
"""

import apache_beam as beam

from openwit.hashing import stable_uniform

STAGE = "balance"
REASONS = {"over_query_cap": "every matched query already had its share (MetaCLIP's p = t / count draw failed)"}


def keep_probability(count: int, t: float) -> float:
    return 1.0 if count <= t else t / count


def is_kept(url: str, queries: list[int], counts: dict[int, int], t: float) -> bool:
    return any(stable_uniform(url, q) < keep_probability(counts[q], t) for q in queries)


class _BalanceFn(beam.DoFn):
    def __init__(self, t: float):
        self.t = t

    def process(self, candidate, counts):
        if is_kept(candidate["url"], candidate["queries"], counts, self.t):
            yield candidate
        else:
            yield beam.pvalue.TaggedOutput("rejects", {
                "url": candidate["url"], "caption": candidate["caption"], "stage": STAGE,
                "reason": "over_query_cap", "source": candidate["source"]})


def count_per_query(candidates):
    """(query id, number of candidates matching it), a Beam combine over the whole input."""
    return (
        candidates
        | "QueryIds" >> beam.FlatMap(lambda c: c["queries"])
        | "CountPerQuery" >> beam.combiners.Count.PerElement()
    )


class Balance(beam.PTransform):
    """candidates (with "queries") -> (kept, rejects, per-query candidate counts)."""

    def __init__(self, max_per_query: int, oversample: float = 1.0):
        super().__init__()
        self.t = max_per_query * oversample

    def expand(self, candidates):
        counts = count_per_query(candidates)
        outputs = candidates | "KeepOrDrop" >> beam.ParDo(
            _BalanceFn(self.t), counts=beam.pvalue.AsDict(counts)
        ).with_outputs("rejects", main="kept")
        return outputs.kept, outputs.rejects, counts
