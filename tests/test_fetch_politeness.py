"""Politeness, on by default: robots.txt, opt-out headers and meta tags, Crawl-delay, host-wide back-off."""

import asyncio
import email.utils
import time

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from fetch_helpers import fetch_all, jpeg_bytes, serve, short_options
from pipeline.fetch import Fetcher
from pipeline.politeness import (RobotsCache, meta_robots_opts_out, parse_retry_after, parse_robots,
                                 user_agent_token, x_robots_tag_opts_out)

pytestmark = pytest.mark.timeout(60)

JPEG = jpeg_bytes()
US = ("openwit", "img2dataset")


def site(robots_txt=None, robots_status=200, headers=None, robots_hits=None):
    """Routes of a small site: /robots.txt as given, and images under /public/ and /private/."""

    async def robots(request):
        if robots_hits is not None:
            robots_hits.append(1)
        if robots_txt is None and robots_status == 200:
            raise web.HTTPNotFound()
        return web.Response(status=robots_status, text=robots_txt or "")

    async def image(request):
        return web.Response(body=JPEG, headers=headers or {})

    return {"/robots.txt": robots, "/public/{name}": image, "/private/{name}": image}


def test_robots_txt_disallow_is_honoured_and_fetched_once_per_host():
    hits = []
    routes = site("User-agent: OpenWIT\nDisallow: /private/\n", robots_hits=hits)
    urls = [f"/public/{n}.jpg" for n in range(5)] + [f"/private/{n}.jpg" for n in range(5)]
    results = fetch_all(routes, urls)
    assert [r.reason for r in results] == [None] * 5 + ["robots_disallowed"] * 5
    assert len(hits) == 1


def test_robots_group_of_another_agent_does_not_apply():
    results = fetch_all(site("User-agent: otherbot\nDisallow: /\n"), ["/private/a.jpg"])
    assert results[0].reason is None


def test_robots_txt_can_be_ignored_only_explicitly():
    routes = site("User-agent: *\nDisallow: /\n")
    assert fetch_all(routes, ["/public/a.jpg"])[0].reason == "robots_disallowed"
    assert fetch_all(routes, ["/public/a.jpg"], respect_robots=False)[0].reason is None


def test_missing_robots_allows_and_failing_robots_disallows():
    # RFC 9309: 4xx means no rules; 5xx means "unreachable", so assume complete disallow.
    assert fetch_all(site(None), ["/private/a.jpg"])[0].reason is None
    assert fetch_all(site("", robots_status=500), ["/public/a.jpg"])[0].reason == "robots_disallowed"


def test_crawl_delay_spaces_requests_to_the_host():
    arrivals = []

    async def image(request):
        arrivals.append(asyncio.get_running_loop().time())
        return web.Response(body=JPEG)

    routes = {**site("User-agent: *\nCrawl-delay: 0.3\n"), "/public/{name}": image}
    results = fetch_all(routes, [f"/public/{n}.jpg" for n in range(3)])
    assert all(r.reason is None for r in results)
    # Arrival times carry scheduler jitter on a loaded machine (one gap seen at 0.288 s): the spacing must hold
    # over the whole run, and no gap may come near back-to-back (unspaced requests arrive ~1 ms apart).
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert arrivals[-1] - arrivals[0] >= 0.29 * len(gaps) and min(gaps) >= 0.15


def test_crawl_delay_is_capped_so_one_host_cannot_stall_a_shard():
    results = fetch_all(site("User-agent: *\nCrawl-delay: 3600\n"), [f"/public/{n}.jpg" for n in range(3)],
                        max_crawl_delay_s=0.05)
    assert all(r.reason is None for r in results)


@pytest.mark.parametrize("values, opted_out", [
    (["noai"], True),
    (["noimageai"], True),
    (["noindex, nofollow"], True),
    (["NoImageIndex"], True),
    (["nofollow", "noarchive"], False),
    (["otherbot: noindex"], False),
    (["otherbot: noindex, nofollow"], False),
    (["OpenWIT: noai"], True),
    (["otherbot: noindex", "openwit: noimageindex"], True),
    (["otherbot: nofollow, openwit: noindex"], True),
    (["openwit: nofollow, otherbot: noai"], False),
    (["img2dataset: noai"], True),
    (["unavailable_after: 25 Jun 2010 15:00:00 PST"], False),
    (["max-image-preview: none, noai"], True),
])
def test_x_robots_tag_directives_and_scopes(values, opted_out):
    assert x_robots_tag_opts_out(values, US) is opted_out


def test_opt_out_headers_end_to_end():
    def route(value):
        async def image(request):
            return web.Response(body=JPEG, headers={"X-Robots-Tag": value})
        return image

    routes = {"/a": route("noai"), "/b": route("otherbot: noindex"), "/c": route("openwit: noimageai")}
    results = fetch_all(routes, ["/a", "/b", "/c"])
    assert [r.reason for r in results] == ["opted_out", None, "opted_out"]
    assert fetch_all(routes, ["/a"], respect_opt_outs=False)[0].reason is None


def page(meta):
    return f"<html><head><title>t</title>{meta}</head><body><img src=a.jpg alt=cat></body></html>"


@pytest.mark.parametrize("meta, opted_out", [
    ('<meta name="robots" content="noai, noimageai">', True),
    ('<meta name="ROBOTS" content="noindex">', True),
    ('<meta name="robots" content="nofollow">', False),
    ('<meta name="otherbot" content="noindex">', False),
    ('<meta name="openwit" content="noimageindex">', True),
    ("", False),
])
def test_meta_robots(meta, opted_out):
    assert meta_robots_opts_out(page(meta).encode(), US) is opted_out


def test_fetch_page_honours_meta_robots_robots_txt_and_does_not_sniff_images():
    def html(meta):
        async def handler(request):
            return web.Response(text=page(meta), content_type="text/html")
        return handler

    async def robots(request):
        return web.Response(text="User-agent: *\nDisallow: /secret\n")

    routes = {"/robots.txt": robots,
              "/open": html(""), "/noai": html('<meta name="robots" content="noai">'), "/secret": html("")}
    results = fetch_all(routes, ["/open", "/noai", "/secret"], page=True)
    assert [r.reason for r in results] == [None, "opted_out", "robots_disallowed"]
    assert b"alt=cat" in results[0].body


def test_429_pauses_the_whole_host_not_only_the_url():
    arrivals = {}

    async def handler(request):
        arrivals[request.path] = asyncio.get_running_loop().time()
        if request.path == "/first":
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(body=JPEG)

    first, second = fetch_all({"/first": handler, "/second": handler}, ["/first", "/second"],
                              per_host_concurrency=1)
    assert first.reason == "http_429" and second.reason is None
    assert arrivals["/second"] - arrivals["/first"] >= 0.95


def test_retry_after_forms():
    assert parse_retry_after("120") == 120.0
    soon = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 <= parse_retry_after(soon) <= 61
    assert parse_retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None and parse_retry_after("-5") is None


def test_user_agent_token_is_the_product_name():
    assert user_agent_token("OpenWIT/0.1 (+https://github.com/openwit/openwit)") == "openwit"
    assert user_agent_token("MyCrawler (+mailto:me@example.org)") == "mycrawler"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.text(max_size=200))
def test_parsers_never_raise_on_arbitrary_server_input(robots_bytes, header):
    # robots.txt, X-Robots-Tag and pages come from servers we do not control: any bytes give an answer.
    assert parse_robots(robots_bytes).allows("http://example.com/a/b.jpg", "openwit") in (True, False)
    assert x_robots_tag_opts_out([header], US) in (True, False)
    assert meta_robots_opts_out(robots_bytes, US) in (True, False)


def test_robots_rules_are_kept_per_worker_across_fetchers_but_failures_are_not():
    hits, down_hits = [], []
    routes = site("User-agent: OpenWIT\nDisallow: /private/\nCrawl-delay: 0\n", robots_hits=hits)

    async def two_shards(cache):
        async with serve(routes) as base:
            results = []
            for _ in range(2):  # two shards of one worker: two Fetchers, two event-loop lifetimes of a session
                async with Fetcher(short_options(), cache) as fetcher:
                    results += await asyncio.gather(fetcher.fetch(base + "/public/a.jpg"),
                                                    fetcher.fetch(base + "/private/b.jpg"))
            return results

    results = asyncio.run(two_shards(RobotsCache()))
    assert [r.reason for r in results] == [None, "robots_disallowed"] * 2
    assert len(hits) == 1  # read by the first shard only
    asyncio.run(two_shards(None))  # without a shared cache each Fetcher reads it again
    assert len(hits) == 3

    failing = site("", robots_status=503, robots_hits=down_hits)

    async def twice():
        cache = RobotsCache()
        async with serve(failing) as base:
            for _ in range(2):
                async with Fetcher(short_options(), cache) as fetcher:
                    assert (await fetcher.fetch(base + "/public/a.jpg")).reason == "robots_disallowed"

    asyncio.run(twice())
    assert len(down_hits) == 2  # an unreachable robots.txt is asked again by the next shard
