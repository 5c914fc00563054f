"""Names resolved by c-ares against a DNS server the test runs on 127.0.0.1 (never the machine's resolver): TTLs
honoured by the per-worker cache, DNS failures counted apart from connection failures, the SSRF guard still on
every answer, and internationalised host names (IDNA 2008 / UTS 46) fetched in both spellings."""

import asyncio
import socket

import pytest
from aiohttp import web

from fetch_helpers import DnsServer, jpeg_bytes, serve, short_options
from pipeline.dns import CaresResolver, DnsCache, DnsError, check_servers
from pipeline.fetch import Fetcher
from pipeline.plan_shards import host_of
from openwit.errors import InputError

pytestmark = pytest.mark.timeout(60)

JPEG = jpeg_bytes()


def fetch_by_name(zone: dict, urls: list[str], allow_endpoint=True, caches=1, **overrides):
    """Serve images on 127.0.0.1, answer DNS from `zone` ("PORT" in a URL is the server's port), and fetch `urls`
    with the guard ON; the server's exact endpoint is allowed (standing in for a public host) if asked.
    Returns (results, DNS queries seen, Host headers seen)."""
    hosts = []

    async def image(request):
        hosts.append(request.headers["Host"])
        return web.Response(body=JPEG)

    async def main(dns_server):
        async with serve({"/{name}": image}) as base:
            port = base.rsplit(":", 1)[1]
            options = short_options(**{"allow_private_addresses": False, "respect_robots": False,
                                       "dns_servers": (dns_server.address,),
                                       "allowed_endpoints": (f"127.0.0.1:{port}",) if allow_endpoint else (),
                                       **overrides})
            cache, results = DnsCache(), []
            for _ in range(caches):  # several Fetchers sharing the worker's cache: several shards of a worker
                async with Fetcher(options, dns_cache=cache) as fetcher:
                    results += await asyncio.gather(*(fetcher.fetch(u.replace("PORT", port)) for u in urls))
            return results

    with DnsServer(zone) as dns_server:
        results = asyncio.run(main(dns_server))
    return results, dns_server.queries, hosts


def test_names_resolve_through_the_given_server_and_the_guard_still_filters_answers():
    zone = {"img.test": [("A", "127.0.0.1", 300)]}
    [ok], queries, _ = fetch_by_name(zone, ["http://img.test:PORT/a.jpg"])
    assert ok.reason is None and ok.body == JPEG
    assert ("img.test", "A") in queries
    [refused], _, hits = fetch_by_name(zone, ["http://img.test:PORT/a.jpg"], allow_endpoint=False)
    assert refused.reason == "private_address" and hits == []  # a name that answers 127.0.0.1 is still refused


def test_dns_failures_are_counted_apart_from_connection_failures():
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    zone = {"img.test": [("A", "127.0.0.1", 300)], "broken.test": "SERVFAIL"}
    missing, servfail, refused_conn = fetch_by_name(
        zone, ["http://missing.test:PORT/a.jpg", "http://broken.test:PORT/a.jpg",
               f"http://img.test:{dead_port}/a.jpg"], allowed_endpoints=(f"127.0.0.1:{dead_port}",),
        allow_endpoint=False)[0]
    assert missing.reason == "dns_error" and "not found" in missing.error_message
    assert servfail.reason == "dns_error"
    assert refused_conn.reason == "connection_error"


def test_a_dns_server_that_never_answers_ends_in_dns_error_not_timeout():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never read: queries vanish
        silent.bind(("127.0.0.1", 0))
        address = "127.0.0.1:%d" % silent.getsockname()[1]

        async def main():
            options = short_options(allow_private_addresses=False, respect_robots=False, dns_servers=(address,),
                                    timeout_s=2.0)
            async with Fetcher(options) as fetcher:
                return await fetcher.fetch("http://img.test/a.jpg")

        result = asyncio.run(main())
    assert result.reason == "dns_error"


def resolve_many(cache: DnsCache, server: DnsServer, names: list[str]):
    async def main():
        resolver = CaresResolver(cache, (server.address,), timeout_s=0.5)
        try:
            out = []
            for name in names:
                try:
                    out.append([a["host"] for a in await resolver.resolve(name, 80, socket.AF_INET)])
                except DnsError as e:
                    out.append(e)
            return out
        finally:
            await resolver.close()

    return asyncio.run(main())


def test_cache_keeps_an_answer_for_its_ttl_and_no_longer():
    now = [1000.0]
    cache = DnsCache(clock=lambda: now[0])
    zone = {"short.test": [("A", "127.0.0.2", 30)], "long.test": [("A", "127.0.0.3", 3600)]}
    with DnsServer(zone) as server:
        assert resolve_many(cache, server, ["short.test", "long.test"]) == [["127.0.0.2"], ["127.0.0.3"]]
        now[0] += 29  # within both TTLs: served from the cache, by a new resolver (the next shard of the worker)
        resolve_many(cache, server, ["short.test", "long.test"])
        assert len(server.queries) == 2
        now[0] += 2  # short.test's 30 s are over; long.test's TTL is capped at max_ttl_s (300 s), not yet over
        resolve_many(cache, server, ["short.test", "long.test"])
        assert server.queries.count(("short.test", "A")) == 2 and server.queries.count(("long.test", "A")) == 1
        now[0] += 300
        resolve_many(cache, server, ["long.test"])
        assert server.queries.count(("long.test", "A")) == 2


def test_a_missing_name_is_asked_once_per_negative_ttl_and_server_failures_are_not_cached():
    now = [0.0]
    cache = DnsCache(clock=lambda: now[0])
    with DnsServer({"broken.test": "SERVFAIL"}) as server:
        results = resolve_many(cache, server, ["gone.test"] * 3 + ["broken.test"] * 2)
        assert all(isinstance(r, DnsError) for r in results)
        assert server.queries.count(("gone.test", "A")) == 1
        assert server.queries.count(("broken.test", "A")) >= 2
        now[0] += 61
        resolve_many(cache, server, ["gone.test"])
        assert server.queries.count(("gone.test", "A")) == 2


def test_many_urls_of_one_host_cost_one_query_across_fetchers_of_a_worker():
    zone = {"img.test": [("A", "127.0.0.1", 300)]}
    results, queries, _ = fetch_by_name(zone, [f"http://img.test:PORT/{i}.jpg" for i in range(20)], caches=2)
    assert all(r.reason is None for r in results) and len(results) == 40
    assert queries.count(("img.test", "A")) == 1


def test_dns_servers_option_is_checked():
    check_servers(("1.1.1.1", "127.0.0.1:5353", "[::1]:53", "2606:4700:4700::1111"))
    for bad in ("dns.google", "1.1.1.1:0", "1.1.1.1:x", "[::1]x"):
        with pytest.raises(InputError, match="--dns-servers"):
            check_servers((bad,))


# -- internationalised host names -----------------------------------------------------------------------------

IDN_ZONE = {"xn--bcher-kva.de": [("A", "127.0.0.1", 300)]}  # DNS holds the ASCII (punycode) form


def test_idn_hosts_are_fetched_in_both_spellings_and_sent_in_ascii():
    urls = ["http://xn--bcher-kva.de:PORT/x.jpg", "http://bücher.de:PORT/x.jpg", "http://BÜCHER.de:PORT/y.jpg",
            "http://bücher。de:PORT/z.jpg"]  # an ideographic full stop is a dot under UTS 46, as in browsers
    results, queries, hosts = fetch_by_name(IDN_ZONE, urls)
    assert [r.reason for r in results] == [None] * 4
    assert {q[0] for q in queries} == {"xn--bcher-kva.de"}
    assert {h.split(":")[0] for h in hosts} == {"xn--bcher-kva.de"}


def test_idn_hosts_stay_under_the_address_guard():
    results, _, hits = fetch_by_name(IDN_ZONE, ["http://bücher.de:PORT/x.jpg", "http://xn--bcher-kva.de:PORT/x.jpg"],
                                     allow_endpoint=False)
    assert [r.reason for r in results] == ["private_address"] * 2 and hits == []


def test_malformed_idn_is_a_bad_url():
    results, queries, _ = fetch_by_name(IDN_ZONE, ["http://xn--zz.de/x.jpg", "http://a..b/x.jpg"])
    assert [r.reason for r in results] == ["bad_url"] * 2 and queries == []


def test_planner_puts_both_spellings_of_a_host_together():
    assert host_of("http://bücher.de/x.jpg") == host_of("http://xn--BCHER-kva.de/y.jpg") == "xn--bcher-kva.de"
    assert host_of("http://Example.COM/a") == "example.com"
