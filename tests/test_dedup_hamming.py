"""The multi-index Hamming search returns exactly what a brute-force scan returns."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup.hamming_index import HammingIndex, brute_force, choose_tables

codes64 = st.integers(min_value=0, max_value=2**64 - 1)


def flip(code: int, bits: list[int]) -> int:
    for b in bits:
        code ^= 1 << b
    return code


@st.composite
def clustered_codes(draw):
    """Codes in tight clusters (as pHashes of near-duplicates are), plus unrelated codes."""
    centres = draw(st.lists(codes64, min_size=1, max_size=6))
    codes = list(centres)
    for c in centres:
        for bits in draw(st.lists(st.lists(st.integers(0, 63), max_size=14), max_size=12)):
            codes.append(flip(c, bits))
    codes += draw(st.lists(codes64, max_size=40))
    return codes


@settings(max_examples=150, deadline=None)
@given(codes=clustered_codes(), radius=st.integers(0, 20), tables=st.one_of(st.none(), st.integers(3, 8)),
       query_bits=st.lists(st.integers(0, 63), max_size=12), pick=st.integers(0, 10_000))
def test_query_equals_brute_force(codes, radius, tables, query_bits, pick):
    arr = np.array(codes, dtype=np.uint64)
    index = HammingIndex(arr, radius=radius, tables=tables)
    query = flip(codes[pick % len(codes)], query_bits)
    ids, dists = index.query(query, radius)
    want_ids, want_dists = brute_force(arr, query, radius)
    assert ids.tolist() == want_ids.tolist()
    assert dists.tolist() == want_dists.tolist()


@settings(max_examples=60, deadline=None)
@given(codes=clustered_codes(), radius=st.integers(0, 16), queries=st.lists(codes64, max_size=8),
       pick=st.lists(st.integers(0, 10_000), max_size=8))
def test_batch_query_equals_brute_force(codes, radius, queries, pick):
    arr = np.array(codes, dtype=np.uint64)
    queries = queries + [flip(codes[p % len(codes)], [p % 64]) for p in pick]
    index = HammingIndex(arr, radius=radius)
    qpos, ids, dists = index.query_many(np.array(queries, dtype=np.uint64), radius)
    for i, q in enumerate(queries):
        want_ids, want_dists = brute_force(arr, q, radius)
        assert ids[qpos == i].tolist() == want_ids.tolist()
        assert dists[qpos == i].tolist() == want_dists.tolist()


def test_lookup_radius_may_differ_from_build_radius():
    codes = np.array([0, 0b1, 0b111, 0xFFFF, 2**64 - 1], dtype=np.uint64)
    index = HammingIndex(codes, radius=2)
    assert index.query(0, 3)[0].tolist() == [0, 1, 2]
    assert index.query(0, 0)[0].tolist() == [0]
    assert index.query(2**64 - 1, 64)[0].tolist() == [0, 1, 2, 3, 4]


def test_empty_index_finds_nothing():
    index = HammingIndex(np.zeros(0, dtype=np.uint64), radius=8)
    assert index.query(123, 8)[0].tolist() == []
    assert [a.tolist() for a in index.query_many(np.array([1, 2], dtype=np.uint64), 8)] == [[], [], []]


def test_large_index_uses_several_tables_and_survives_pickle():
    import pickle

    rng = np.random.default_rng(7)
    codes = rng.integers(0, 2**64 - 1, size=50_000, dtype=np.uint64, endpoint=True)
    assert choose_tables(len(codes), 10) >= 3  # a single table would probe ~C(64, <=10) values
    index = pickle.loads(pickle.dumps(HammingIndex(codes, radius=10)))
    query = int(codes[123]) ^ 0b1011
    assert index.query(query, 10)[0].tolist() == brute_force(codes, query, 10)[0].tolist()
