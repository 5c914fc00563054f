"""Exact URL dedup before fetching: one candidate per image URL, chosen the same way on every run and in
every arrival order; every other one is a counted reject."""

from hypothesis import given
from hypothesis import strategies as st

from pipeline.build_wit import _first_of_url


def split(outputs):
    kept = [o for o in outputs if isinstance(o, dict)]
    rejected = [o.value for o in outputs if not isinstance(o, dict)]
    return kept, rejected


@given(st.lists(st.tuples(st.sampled_from(["a red cat", "cat", "A cat"]), st.sampled_from(["", "http://p/1"])),
                min_size=1, max_size=12), st.randoms())
def test_one_kept_per_url_independent_of_arrival_order(pairs, rnd):
    candidates = [{"url": "http://x/1.jpg", "caption": c, "page_url": p, "source": f"t.csv:{i}"}
                  for i, (c, p) in enumerate(pairs)]
    kept, rejected = split(list(_first_of_url(("http://x/1.jpg", candidates))))
    shuffled = candidates[:]
    rnd.shuffle(shuffled)
    kept_again, _ = split(list(_first_of_url(("http://x/1.jpg", shuffled))))
    assert len(kept) == 1 and kept == kept_again
    assert len(rejected) == len(candidates) - 1
    assert all(r["stage"] == "dedup" and r["reason"] == "duplicate_url" for r in rejected)
    # Nothing lost: the kept one and the rejects are exactly the candidates that came in.
    assert sorted([r["source"] for r in rejected] + [kept[0]["source"]]) == sorted(c["source"] for c in candidates)
