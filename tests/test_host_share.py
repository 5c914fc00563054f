"""Per-host politeness that holds cluster-wide without coordination: the planner records into how many shards (k)
each host was split, and each shard's fetcher gives the host 1/k of --max-host-rate and of the per-host
concurrency. Rates are measured at a loopback server with tolerant bounds (the spacing can only be stretched by
a busy machine, never shortened, so the lower bounds on time are exact and the upper ones generous)."""

import asyncio
from collections import defaultdict

import apache_beam as beam
import pytest
from aiohttp import web
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from fetch_helpers import jpeg_bytes, serve, short_options
from pipeline import fetch, resize
from pipeline.fetch import Fetcher
from pipeline.plan_shards import PlanShards, host_of
from pipeline.write_shards import ShardBuilder, ShardConfig

pytestmark = pytest.mark.timeout(120)

JPEG = jpeg_bytes()


class Recorder:
    """A loopback image server that notes each request's arrival time and the most requests in flight."""

    def __init__(self, hold_s: float = 0.0):
        self.arrivals, self.in_flight, self.max_in_flight, self.hold_s = [], 0, 0, hold_s

    async def handler(self, request):
        self.arrivals.append(asyncio.get_running_loop().time())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hold_s:
                await asyncio.sleep(self.hold_s)  # keeps the request open so that concurrency is visible
            return web.Response(body=JPEG)
        finally:
            self.in_flight -= 1


def run_shards(recorder: Recorder, urls_per_shard: int, shards: int, host_shards: int, **overrides) -> list:
    """`shards` Fetchers at once (the shards of one host, running on `shards` workers), each fetching
    `urls_per_shard` URLs of the one host 127.0.0.1, told the host was split into `host_shards` shards."""

    async def main():
        async with serve({"/{name}": recorder.handler}) as base:
            async def one_shard(s):
                options = short_options(respect_robots=False, **overrides)
                async with Fetcher(options, host_shards={"127.0.0.1": host_shards}) as fetcher:
                    return await asyncio.gather(*(fetcher.fetch(f"{base}/{s}-{i}.jpg") for i in range(urls_per_shard)))

            return sum(await asyncio.gather(*(one_shard(s) for s in range(shards))), [])

    results = asyncio.run(main())
    assert all(r.reason is None for r in results)
    return results


def measured_rate(arrivals: list[float], spacing: float) -> float:
    """Requests per second, counting each request as occupying one spacing interval (a burst at the start of
    k shards would otherwise count k requests in zero time)."""
    return len(arrivals) / (max(arrivals) - min(arrivals) + spacing)


def test_one_shard_of_a_split_host_gets_its_share_of_the_rate():
    recorder = Recorder()
    run_shards(recorder, urls_per_shard=9, shards=1, host_shards=2, max_host_rate=40.0)
    span = max(recorder.arrivals) - min(recorder.arrivals)
    assert span >= 8 * (2 / 40) * 0.95  # 20 requests/s for this shard: at least 0.4 s for 9 requests
    assert 20 / 3 < measured_rate(recorder.arrivals, 2 / 40) <= 20 * 1.05


def test_all_shards_of_a_host_together_stay_within_the_host_rate():
    recorder = Recorder()
    run_shards(recorder, urls_per_shard=6, shards=3, host_shards=3, max_host_rate=30.0)
    # 3 shards of the host at once, each spaced by 3/30 s: together about 30/s, never above
    assert len(recorder.arrivals) == 18
    assert 10 < measured_rate(recorder.arrivals, 3 / 30) <= 30 * 1.05


def test_min_host_delay_is_shared_too():
    recorder = Recorder()
    run_shards(recorder, urls_per_shard=4, shards=1, host_shards=3, min_host_delay_s=0.05)
    assert max(recorder.arrivals) - min(recorder.arrivals) >= 3 * 0.15 * 0.95


def test_robots_crawl_delay_is_shared_like_the_rate():
    recorder = Recorder()

    async def robots(request):
        return web.Response(text="User-agent: *\nCrawl-delay: 0.1\n")

    async def main():
        async with serve({"/robots.txt": robots, "/{name}": recorder.handler}) as base:
            async with Fetcher(short_options(), host_shards={"127.0.0.1": 2}) as fetcher:
                return await asyncio.gather(*(fetcher.fetch(f"{base}/{i}.jpg") for i in range(3)))

    assert all(r.reason is None for r in asyncio.run(main()))
    assert max(recorder.arrivals) - min(recorder.arrivals) >= 2 * 0.2 * 0.95  # 0.1 s for the site, 2 shards


def test_build_options_reach_the_fetcher(tmp_path):
    from openwit.errors import InputError
    from pipeline import build_wit

    base = ["--pairs", "p.csv", "--queries", "q.txt", "--output", str(tmp_path)]
    o = build_wit.parse_options(base + ["--max-host-rate", "2.5", "--dns-servers", "1.1.1.1, 127.0.0.1:5353"])
    options = build_wit.fetch_options(o)
    assert options.max_host_rate == 2.5 and options.dns_servers == ("1.1.1.1", "127.0.0.1:5353")
    assert build_wit.fetch_options(build_wit.parse_options(base)).dns_servers == ()
    for bad in (["--max-host-rate", "-1"], ["--dns-servers", "resolver.example"]):
        with pytest.raises(InputError):
            build_wit.fetch_options(build_wit.parse_options(base + bad))


@pytest.mark.parametrize("host_shards, expected", [(1, 4), (2, 2), (8, 1)])
def test_per_host_concurrency_is_divided_between_the_shards_of_the_host(host_shards, expected):
    recorder = Recorder(hold_s=0.05)
    run_shards(recorder, urls_per_shard=8, shards=1, host_shards=host_shards, per_host_concurrency=4)
    assert recorder.max_in_flight == expected  # at least one: a shard of a host split 8 ways still progresses


def test_other_hosts_are_not_slowed_by_a_split_host():
    recorder = Recorder()

    async def main():
        async with serve({"/{name}": recorder.handler}) as base:
            options = short_options(respect_robots=False, max_host_rate=1000.0)
            async with Fetcher(options, host_shards={"split.example": 100}) as fetcher:
                return await asyncio.gather(*(fetcher.fetch(f"{base}/{i}.jpg") for i in range(10)))

    assert all(r.reason is None for r in asyncio.run(main()))
    assert max(recorder.arrivals) - min(recorder.arrivals) < 2.0  # 100 shards' share would take 9 s


@pytest.mark.parametrize("url", ["http://Example.COM/a", "http://example.com./a", "http://[2001:DB8::1]:8080/a",
                                 "http://user:pw@host.example/a", "http://BÜCHER.de/x", "http://xn--bcher-kva.de/x",
                                 "http://1.2.3.4:80/", "http://a_b.example/"])
def test_planner_and_fetcher_name_a_host_alike(url):
    from yarl import URL

    assert host_of(url) == URL(url).raw_host  # the key of host_shards is the key of the fetcher's host gate


def _check_host_shards(planned):
    shards_of = defaultdict(set)
    for shard, candidate in planned:
        shards_of[host_of(candidate["url"])].add(shard)
    for shard, candidate in planned:
        assert candidate["host_shards"] == len(shards_of[host_of(candidate["url"])]), candidate
    assert len(shards_of["big.example"]) > 2  # the case that matters is there: a host split many ways
    assert any(len(s) == 2 for h, s in shards_of.items() if h != "big.example")  # a small host across a boundary


def test_planner_records_into_how_many_shards_each_host_was_split():
    urls = ([f"http://big.example/{i}.jpg" for i in range(45)]
            + [f"http://h{i % 13}.example/{i}.jpg" for i in range(70)] + ["http://bücher.de/a.jpg",
                                                                          "http://xn--bcher-kva.de/b.jpg"])
    candidates = [{"url": u, "caption": "c", "queries": [0], "source": "t"} for u in urls]
    with TestPipeline(runner="FnApiRunner") as p:
        planned = (p | beam.Create(candidates) | PlanShards(10)
                   | beam.FlatMapTuple(lambda shard, cs: [(shard, c) for c in cs]))
        assert_that(planned, _check_host_shards)


def test_shard_builder_passes_the_plan_share_to_its_fetcher(tmp_path):
    recorder = Recorder(hold_s=0.05)

    async def serve_and_build():
        async with serve({"/{name}": recorder.handler}) as base:
            candidates = [{"url": f"{base}/{i}.jpg", "caption": "c", "queries": [0], "page_url": "", "source": "t",
                           "index": i, "key": f"00000{i:04d}", "host_shards": 4} for i in range(8)]
            config = ShardConfig(output=str(tmp_path), image=resize.ImageOptions(image_size=32),
                                 fetch=fetch.FetchOptions(allow_private_addresses=True, respect_robots=False,
                                                          per_host_concurrency=4, timeout_s=10))
            builder = ShardBuilder(config)
            try:
                return await asyncio.get_running_loop().run_in_executor(None, builder.build, 0, candidates)
            finally:
                builder.close()

    summary = asyncio.run(serve_and_build())
    assert summary["successes"] == 8
    assert recorder.max_in_flight == 1  # 4 per host, split into 4 shards
