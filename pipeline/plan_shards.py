"""Assign every kept candidate a shard and an index in it, grouping by host.

Why by host: a host's URLs then land in few shards, so one worker fetches them and per-host politeness, DNS
caching and connection reuse hold without a cluster-wide rate limiter. A host with more URLs than fit one
shard is split into buckets of about a shard each, so no worker ever holds a giant host in memory.

The layout is deterministic: groups (host, bucket) are ordered by a stable hash and laid end to end; inside a
group, candidates are ordered by a stable hash of the URL; position p goes to shard p // samples_per_shard.
Only small records move here: url, caption, queries — never image bytes.
"""

import math
from urllib.parse import urlsplit

import apache_beam as beam

from openwit.hashing import stable_hash64


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def sample_key(shard: int, index: int, samples_per_shard: int) -> str:
    """img2dataset's key: shard id (5 digits) then index in shard, zero-padded to the shard size's width."""
    return f"{shard:05d}{index:0{len(str(samples_per_shard - 1))}d}"


def group_layout(group_sizes: list[tuple[tuple[str, int], int]]) -> dict[tuple[str, int], int]:
    """First global position of each (host, bucket) group, in a stable hash order."""
    offsets, position = {}, 0
    for group, size in sorted(group_sizes, key=lambda gs: (stable_hash64(*gs[0]), gs[0])):
        offsets[group] = position
        position += size
    return offsets


def _group_key(candidate, buckets_per_host):
    host = host_of(candidate["url"])
    buckets = buckets_per_host.get(host, 1)
    bucket = stable_hash64(candidate["url"]) % buckets if buckets > 1 else 0
    return (host, bucket), candidate


def _place(group_and_members, offsets, samples_per_shard):
    group, members = group_and_members
    members = sorted(members, key=lambda c: (stable_hash64(c["url"]), c["url"]))
    start = offsets[group]
    for i, candidate in enumerate(members):
        shard, index = divmod(start + i, samples_per_shard)
        yield shard, {**candidate, "index": index, "key": sample_key(shard, index, samples_per_shard)}


class PlanShards(beam.PTransform):
    """kept candidates -> (shard id, [candidate with "index" and "key", ...]) per shard."""

    def __init__(self, samples_per_shard: int):
        super().__init__()
        self.samples_per_shard = samples_per_shard

    def expand(self, candidates):
        sps = self.samples_per_shard
        big_hosts = (
            candidates
            | "Host" >> beam.Map(lambda c: (host_of(c["url"]), 1))
            | "CountPerHost" >> beam.CombinePerKey(sum)
            | "BigHosts" >> beam.Filter(lambda hc: hc[1] > sps)
            | "Buckets" >> beam.Map(lambda hc: (hc[0], math.ceil(hc[1] / sps)))
        )
        groups = (
            candidates
            | "GroupKey" >> beam.Map(_group_key, beam.pvalue.AsDict(big_hosts))
            | "GroupByHost" >> beam.GroupByKey()
        )
        offsets = (
            groups
            | "GroupSize" >> beam.Map(lambda kv: (kv[0], sum(1 for _ in kv[1])))
            | "AllSizes" >> beam.combiners.ToList()
            | "Layout" >> beam.Map(group_layout)
        )
        return (
            groups
            | "Place" >> beam.FlatMap(_place, beam.pvalue.AsSingleton(offsets), sps)
            | "GroupByShard" >> beam.GroupByKey()
        )
