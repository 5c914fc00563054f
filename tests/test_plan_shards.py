from collections import Counter

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.plan_shards import PlanShards, group_layout, host_of, sample_key


def test_sample_key_follows_img2dataset_layout():
    assert sample_key(1, 5, 10000) == "000010005"
    assert sample_key(12, 0, 100) == "0001200"
    assert sample_key(0, 999, 1000) == "00000999"


@given(st.lists(st.tuples(st.text(min_size=1, max_size=5), st.integers(0, 3)), unique=True, max_size=30),
       st.data())
@settings(max_examples=50, deadline=None)
def test_group_layout_tiles_positions_without_gaps(groups, data):
    sizes = [(g, data.draw(st.integers(1, 50))) for g in groups]
    offsets = group_layout(sizes)
    spans = sorted((offsets[g], offsets[g] + n) for g, n in sizes)
    position = 0
    for start, end in spans:  # each group starts where the previous ended: no gap, no overlap
        assert start == position
        position = end
    assert group_layout(list(reversed(sizes))) == offsets  # independent of arrival order


def _check_layout(urls, result):
    placed = {url: (shard, index, key) for shard, index, url, key in result}
    assert sorted(placed) == sorted(urls)  # each URL exactly once
    slots = Counter((shard, index) for shard, index, _ in placed.values())
    assert max(slots.values()) == 1 and len(slots) == len(urls)
    per_shard = Counter(shard for shard, _, _ in placed.values())
    assert sorted(per_shard) == list(range(10)) and sorted(per_shard.values()) == [2] + [10] * 9
    # The big host is split into ceil(23/10) = 3 buckets, each spanning at most two shards: its URLs land
    # in at most 6 of the 10 shards (a hash of the URL alone would scatter them over all 10).
    big_shards = {placed[u][0] for u in urls if host_of(u) == "big.example"}
    assert len(big_shards) <= 6
    assert all(key == f"{shard:05d}{index}" for shard, index, key in placed.values())


def test_every_candidate_gets_one_slot_and_hosts_stay_together():
    urls = [f"http://big.example/{i}.jpg" for i in range(23)] + [f"http://h{i}.example/a.jpg" for i in range(69)]
    candidates = [{"url": u, "caption": "c", "queries": [0], "source": "t"} for u in urls]
    with TestPipeline(runner="FnApiRunner") as p:
        placed = (p | beam.Create(candidates) | PlanShards(10)
                  | beam.FlatMapTuple(lambda shard, cs: [(shard, c["index"], c["url"], c["key"]) for c in cs]))
        assert_that(placed, lambda result: _check_layout(urls, result))


@given(st.lists(st.sampled_from(["a.example", "b.example", "c.example", "d.example"]), max_size=60))
def test_interleave_hosts_is_a_round_robin_permutation(hosts):
    from pipeline.plan_shards import interleave_hosts

    candidates = [{"url": f"http://{h}/{i}.jpg"} for i, h in enumerate(hosts)]
    out = interleave_hosts(candidates)
    assert sorted(c["url"] for c in out) == sorted(c["url"] for c in candidates)  # nothing lost or added
    for host in set(hosts):  # each host keeps its own order
        assert [c for c in out if host_of(c["url"]) == host] == [c for c in candidates if host_of(c["url"]) == host]
    # Round robin: after any prefix, no host is more than one sample ahead of a host that still has URLs.
    total, seen = Counter(hosts), Counter()
    for c in out:
        seen[host_of(c["url"])] += 1
        waiting = [seen[h] for h in total if seen[h] < total[h]]
        assert not waiting or max(seen.values()) - min(waiting) <= 1
