"""The shard loader: deterministic, splits shards over ranks and workers without losing or repeating a sample,
skips broken samples and shards (counting them), balances online, and resumes mid-epoch exactly."""

import os
import random
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from openwit.errors import InputError
from train_helpers import WordTokenizer, make_shards
from training import data

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(str(tmp_path_factory.mktemp("shards")), n_shards=5, per_shard=12)


def loader(pattern, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("image_size", 16)
    kw.setdefault("shuffle_buffer", 8)
    return data.make_loader(pattern, tokenizer=WordTokenizer(), **kw)


def run(ld, epoch=0, **kw):
    ld.set_epoch(epoch, **kw)
    return list(ld)


def keys_of(batches):
    return [k for b in batches for k in b["keys"]]


def test_same_seed_same_batches_other_seed_other_order(shards):
    a, b = run(loader(shards, seed=1)), run(loader(shards, seed=1))
    assert keys_of(a) == keys_of(b)
    assert all(torch.equal(x["images"], y["images"]) and torch.equal(x["texts"], y["texts"]) for x, y in zip(a, b))
    assert keys_of(run(loader(shards, seed=2))) != keys_of(a)
    assert keys_of(run(loader(shards, seed=1), epoch=1)) != keys_of(a)  # a new order each epoch
    batch = a[0]
    assert batch["images"].shape == (4, 16, 16, 3) and batch["images"].dtype == torch.uint8
    x = data.to_model_input(batch["images"], "cpu")
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and -2.5 < float(x.min()) < float(x.max()) < 2.7


def test_ranks_and_workers_split_shards_no_sample_twice_none_lost(shards):
    seen, shards_per_rank = [], []
    for rank in range(2):
        ld = loader(shards, rank=rank, world_size=2, num_workers=2, fixed_length=False)
        seen += keys_of(run(ld))
        shards_per_rank.append(set(ld.dataset.rank_shards(0, rank)))
    assert len(seen) == len(set(seen)) == 60  # 5 shards x 12
    assert not shards_per_rank[0] & shards_per_rank[1]


def test_fixed_epoch_length_is_the_same_on_every_rank(shards):
    lengths = []
    for rank in range(2):
        ld = loader(shards, rank=rank, world_size=2, batch_size=5, num_workers=2)
        batches = run(ld)
        assert len(batches) == len(ld) == 60 // 10 and all(len(b["keys"]) == 5 for b in batches)
        lengths.append(len(batches))
    assert lengths[0] == lengths[1]


def test_resume_mid_epoch_gives_the_same_next_batches(shards):
    ld = loader(shards, num_workers=2, batch_size=3)
    full = run(ld)
    step = 5
    positions = {}
    for b in full[:step]:
        positions[b["worker"]] = b["position"]
    rest = run(ld, start_step=step, positions=positions)
    assert keys_of(rest) == keys_of(full[step:])
    assert all(torch.equal(x["images"], y["images"]) for x, y in zip(rest, full[step:]))


def test_corrupt_image_and_truncated_tar_are_skipped_and_counted(tmp_path):
    pattern = make_shards(str(tmp_path), n_shards=2, per_shard=10, corrupt={3})
    tar = str(tmp_path / "shards" / "00001.tar")
    size = os.path.getsize(tar)
    with open(tar, "r+b") as f:
        f.truncate(size // 2)  # the second half of shard 1 is gone
    batches = run(loader(pattern, fixed_length=False, batch_size=1))
    skipped = sum((Counter(b["skipped"]) for b in batches), Counter())
    keys = keys_of(batches)
    assert skipped["corrupt_image"] == 1 and skipped["truncated_shard"] == 1
    assert "000000003" not in keys and 9 + 3 <= len(keys) < 9 + 10


def test_pipe_urls_are_read(shards, tmp_path):
    first = shards.replace("{00000..00004}", "00000")
    batches = run(loader(f"pipe:cat {first}", fixed_length=False, check_exists=False))
    assert len(keys_of(batches)) == 12


def test_bad_input_is_an_error_at_start(shards, tmp_path):
    with pytest.raises(InputError, match="do not exist"):
        loader(shards.replace("00004", "00009"))
    with pytest.raises(InputError, match="every rank needs at least one shard"):
        loader(shards, world_size=6, rank=5)
    with pytest.raises(InputError, match="no batch"):
        loader(shards, batch_size=100)
    with pytest.raises(InputError, match="--resampled"):
        loader(shards + "::" + shards, weights=[1, 1])




def test_balancing_keeps_each_query_near_t(tmp_path):
    pattern = make_shards(str(tmp_path), n_shards=4, per_shard=30, n_queries=6)
    urls = data.expand_sources(pattern)[0]
    counts = data.query_counts(urls)
    assert counts[0] > 80  # query 0 matches most samples: the one balancing must cut
    ld = loader(pattern, balance_t=20, fixed_length=False, batch_size=1)
    realised = Counter()
    batches = run(ld)
    for b in batches:
        for queries in b["queries"]:
            realised.update(queries)
    kept = len(keys_of(batches))
    per_sample = [q for url in urls for q in data._read_queries(url)[1]]
    expected = data.expected_kept(per_sample, data.keep_probabilities(counts, 20))
    assert abs(kept - expected) < 4 * expected ** 0.5
    # Rare queries (count <= t) keep every one of their samples; the frequent one comes down to about t.
    for q, c in counts.items():
        if c <= 20:
            assert realised[q] == c
    assert realised[0] < 20 + 15 + 4 * 20 ** 0.5  # t, plus what rare queries keep for it (15 pairs share)


@settings(max_examples=30, deadline=None)
@given(count=st.integers(200, 3000), t=st.integers(20, 400), seed=st.integers(0, 1000))
def test_keep_probability_per_query_is_min_1_t_over_count(count, t, seed):
    probs = data.keep_probabilities(Counter({7: count}), t)
    kept = sum(data.keep_sample([7], probs, random.Random(f"{seed}/{i}")) for i in range(count))
    expect = min(count, t)
    sd = (expect * (1 - expect / count)) ** 0.5
    assert abs(kept - expect) <= 5 * sd + 1
    assert not data.keep_sample([], probs, random.Random(0))  # no query matched: never kept


def test_resampled_mixture_follows_the_weights(tmp_path, shards):
    other = make_shards(str(tmp_path), n_shards=2, per_shard=12)
    ld = loader(f"{shards}::{other}", resampled=True, weights=[1, 3], num_samples=480, batch_size=8)
    urls = [url for b in run(ld) for url in b["keys"]]
    assert len(urls) == 480
    ld.dataset.c.shuffle_buffer = 1
    draws = Counter(os.path.dirname(s["__url__"]) for s, _ in zip(
        ld.dataset._shard_stream(0, 1, Counter()), range(2400)))
    assert draws[os.path.dirname(other)] > 2 * draws[os.path.dirname(shards)]
