"""MetaCLIP balancing with stable hashes: rare queries keep everything, head queries are cut to about t,
and the same input always keeps the same pairs."""

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from hypothesis import given
from hypothesis import strategies as st

from pipeline.balance import Balance, is_kept, keep_probability


@given(st.integers(1, 10**9), st.floats(1, 10**6))
def test_keep_probability_is_metaclip_formula(count, t):
    p = keep_probability(count, t)
    assert 0 < p <= 1 and (p == 1 if count <= t else abs(p - t / count) < 1e-12)


def test_head_query_is_cut_to_about_t_and_tail_query_kept_whole():
    counts = {0: 20000, 1: 50}
    head = [f"http://h.example/{i}.jpg" for i in range(20000)]
    kept_head = sum(is_kept(u, [0], counts, 1000) for u in head)
    assert 900 <= kept_head <= 1100  # binomial(20000, 0.05): mean 1000, sd ~31
    assert all(is_kept(f"http://t.example/{i}.jpg", [1], counts, 1000) for i in range(50))
    # A pair matching a head and a tail query is kept through the tail query.
    assert all(is_kept(u, [0, 1], counts, 1000) for u in head[:200])
    # Stable: the same URLs are kept every time, and oversampling only adds to them.
    assert [is_kept(u, [0], counts, 1000) for u in head] == [is_kept(u, [0], counts, 1000) for u in head]
    assert all(is_kept(u, [0], counts, 2000) for u in head if is_kept(u, [0], counts, 1000))


def _only_balance_rejects(reasons):
    assert set(reasons) == {("balance", "over_query_cap")}


def _totals_add_up(result):
    (n_kept, n_rejected, count_pairs), = result
    assert n_kept + n_rejected == 301
    assert 6 <= n_kept <= 41  # query 0: t=20 of its 300 (binomial, sd ~4.3), plus the one query-1 pair
    assert sorted(count_pairs) == [(0, 300), (1, 1)]


def test_balance_transform_splits_into_kept_and_rejects_with_counts():
    candidates = [{"url": f"http://x.example/{i}", "caption": "c", "source": f"s:{i}", "queries": [0]}
                  for i in range(300)] + [{"url": "http://y.example/1", "caption": "c", "source": "s",
                                          "queries": [1]}]
    with TestPipeline(runner="FnApiRunner") as p:
        kept, rejects, counts = p | beam.Create(candidates) | Balance(max_per_query=20)
        reasons = rejects | beam.Map(lambda r: (r["stage"], r["reason"])) | beam.Distinct()
        assert_that(reasons, _only_balance_rejects, label="Reasons")
        n_rejected = rejects | "CountRejects" >> beam.combiners.Count.Globally()
        all_counts = counts | "AllCounts" >> beam.combiners.ToList()
        totals = (kept | "CountKept" >> beam.combiners.Count.Globally()
                  | beam.Map(lambda k, r, c: (k, r, c), beam.pvalue.AsSingleton(n_rejected),
                             beam.pvalue.AsSingleton(all_counts)))
        assert_that(totals, _totals_add_up, label="Totals")
