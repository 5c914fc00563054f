"""Assign every kept candidate a shard and an index in it, grouping by host.

Why by host: a host's URLs then land in few shards, so one worker fetches them and per-host politeness, DNS
caching and connection reuse hold without a cluster-wide rate limiter. A host with more URLs than fit one
shard is split into buckets of about a shard each, so no worker ever holds a giant host in memory.

The layout is deterministic: groups (host, bucket) are ordered by a stable hash and laid end to end; inside a
group, candidates are ordered by a stable hash of the URL; position p goes to shard p // samples_per_shard.
The web has tens of millions of hosts, so no worker ever holds every group's offset: groups are spread over
SUPER_BUCKETS by hash, the super-buckets' offsets are one small table, and each super-bucket lays out its own
groups. Only small records move here: url, caption, queries — never image bytes.

Every planned candidate also carries `host_shards`: into how many shards its host's URLs were split. The
fetcher of each of those shards gives the host 1/host_shards of the per-host rate and concurrency, so the host's
limits hold across the whole cluster, however many of its shards run at once, without any coordination.
"""

import math
from collections import deque
from urllib.parse import urlsplit

import apache_beam as beam
from yarl import URL

from openwit.hashing import stable_hash64


def host_of(url: str) -> str:
    """The host a URL's politeness limits apply to, in the form the fetcher dials: "bücher.de" and
    "xn--bcher-kva.de" are one host."""
    return ascii_host((urlsplit(url).hostname or "").lower())


def ascii_host(host: str) -> str:
    """A host name in ASCII (IDNA 2008 / UTS 46, as browsers and the fetcher's yarl encode it)."""
    if host.isascii():
        return host
    try:
        return URL.build(scheme="http", host=host).raw_host
    except (ValueError, UnicodeError):
        return host  # not a valid name: the fetcher rejects it as bad_url


def sample_key(shard: int, index: int, samples_per_shard: int) -> str:
    """img2dataset's key: shard id (5 digits) then index in shard, zero-padded to the shard size's width."""
    return f"{shard:05d}{index:0{len(str(samples_per_shard - 1))}d}"


SUPER_BUCKETS = 1024


def group_layout(group_sizes: list[tuple[tuple[str, int], int]], start: int = 0) -> dict[tuple[str, int], int]:
    """First position of each (host, bucket) group, laid end to end from `start` in a stable hash order."""
    offsets, position = {}, start
    for group, size in sorted(group_sizes, key=lambda gs: (stable_hash64(*gs[0]), gs[0])):
        offsets[group] = position
        position += size
    return offsets


def super_bucket(group: tuple[str, int]) -> int:
    return stable_hash64("super", *group) % SUPER_BUCKETS


def super_layout(super_sizes: list[tuple[int, int]]) -> dict[int, int]:
    """First position of each super-bucket: super-buckets in id order, end to end."""
    offsets, position = {}, 0
    for bucket, size in sorted(super_sizes):
        offsets[bucket] = position
        position += size
    return offsets


def _offsets_in_super(bucket_and_groups, super_offsets):
    bucket, group_sizes = bucket_and_groups
    yield from group_layout(list(group_sizes), super_offsets[bucket]).items()


def _host_shards_in_super(bucket_and_groups, super_offsets, samples_per_shard):
    """(host, shard) for each shard that a (host, bucket) group of this super-bucket reaches."""
    bucket, group_sizes = bucket_and_groups
    group_sizes = list(group_sizes)
    offsets = group_layout(group_sizes, super_offsets[bucket])
    for group, size in group_sizes:
        start = offsets[group]
        for shard in range(start // samples_per_shard, (start + size - 1) // samples_per_shard + 1):
            yield group[0], shard


def _group_key(candidate, buckets_per_host):
    host = host_of(candidate["url"])
    buckets = buckets_per_host.get(host, 1)
    bucket = stable_hash64(candidate["url"]) % buckets if buckets > 1 else 0
    return (host, bucket), candidate


def _place(group_and_joined, samples_per_shard):
    _group, joined = group_and_joined
    (start,) = joined["offset"]
    members = sorted(joined["members"], key=lambda c: (stable_hash64(c["url"]), c["url"]))
    for i, candidate in enumerate(members):
        yield (start + i) // samples_per_shard, {**candidate, "position": start + i}


def interleave_hosts(candidates: list[dict]) -> list[dict]:
    """The candidates round-robin over their hosts, each host's own order kept.

    The shard writer fetches a window of consecutive samples; laid out host after host, a window would
    hold one host's URLs only, and its per-host politeness limit would set the pace of the whole shard."""
    queues = {}
    for candidate in candidates:
        queues.setdefault(host_of(candidate["url"]), deque()).append(candidate)
    rounds, out = deque(queues.values()), []
    while rounds:
        queue = rounds.popleft()
        out.append(queue.popleft())
        if queue:
            rounds.append(queue)
    return out


def _order_shard(shard_and_candidates, samples_per_shard, split_hosts):
    """Index, key and host_shards of every sample of a shard: host-interleaved, from the plan's stable positions."""
    shard, candidates = shard_and_candidates
    ordered = interleave_hosts(sorted(candidates, key=lambda c: c["position"]))
    return shard, [
        {**{k: v for k, v in c.items() if k != "position"}, "index": i, "key": sample_key(shard, i, samples_per_shard),
         "host_shards": split_hosts.get(host_of(c["url"]), 1)}
        for i, c in enumerate(ordered)
    ]


class PlanShards(beam.PTransform):
    """kept candidates -> (shard id, [candidate with "index" and "key", ...]) per shard."""

    def __init__(self, samples_per_shard: int):
        super().__init__()
        self.samples_per_shard = samples_per_shard

    def expand(self, candidates):
        sps = self.samples_per_shard
        big_hosts = (  # at most (candidates / shard size) of them: a small side input
            candidates
            | "Host" >> beam.Map(lambda c: (host_of(c["url"]), 1))
            | "CountPerHost" >> beam.CombinePerKey(sum)
            | "BigHosts" >> beam.Filter(lambda hc: hc[1] > sps)
            | "Buckets" >> beam.Map(lambda hc: (hc[0], math.ceil(hc[1] / sps)))
        )
        keyed = candidates | "GroupKey" >> beam.Map(_group_key, beam.pvalue.AsDict(big_hosts))
        sizes = keyed | "One" >> beam.Map(lambda kc: (kc[0], 1)) | "GroupSize" >> beam.CombinePerKey(sum)
        super_offsets = (
            sizes
            | "SuperKey" >> beam.Map(lambda gs: (super_bucket(gs[0]), gs[1]))
            | "SuperSize" >> beam.CombinePerKey(sum)
            | "AllSuperSizes" >> beam.combiners.ToList()
            | "SuperLayout" >> beam.Map(super_layout)
        )
        by_super = (
            sizes
            | "BySuper" >> beam.Map(lambda gs: (super_bucket(gs[0]), gs))
            | "GroupBySuper" >> beam.GroupByKey()
        )
        offsets = by_super | "GroupLayout" >> beam.FlatMap(_offsets_in_super, beam.pvalue.AsSingleton(super_offsets))
        # Hosts in more than one shard: each shard boundary splits at most one group, so there are about as many
        # as there are shards (plus the buckets of big hosts) — a small side input, like big_hosts.
        split_hosts = (
            by_super
            | "HostSpans" >> beam.FlatMap(_host_shards_in_super, beam.pvalue.AsSingleton(super_offsets), sps)
            | "DistinctHostShard" >> beam.Distinct()
            | "HostOfShard" >> beam.Map(lambda host_shard: (host_shard[0], 1))
            | "ShardsPerHost" >> beam.CombinePerKey(sum)
            | "SplitHosts" >> beam.Filter(lambda hk: hk[1] > 1)
        )
        return (
            {"members": keyed, "offset": offsets}
            | "JoinOffsets" >> beam.CoGroupByKey()
            | "Place" >> beam.FlatMap(_place, sps)
            | "GroupByShard" >> beam.GroupByKey()
            | "OrderShard" >> beam.Map(_order_shard, sps, beam.pvalue.AsDict(split_hosts))
        )
