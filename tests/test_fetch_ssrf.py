"""The address guard: by default the fetcher never connects to private, loopback, link-local, multicast or
reserved addresses, whether they come as IP literals, as names that resolve to them, or behind a redirect."""

import asyncio
import ipaddress
import socket

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from fetch_helpers import jpeg_bytes, serve, short_options
from pipeline.fetch import Fetcher
from pipeline.ssrf import GuardedResolver, PrivateAddressError, check_url_host, is_public_address

pytestmark = pytest.mark.timeout(60)

REFUSED = ["127.0.0.1", "127.8.9.10", "::1", "10.0.0.1", "10.255.1.2", "172.16.5.4", "192.168.1.1",
           "169.254.169.254", "169.254.0.1", "100.64.0.1", "0.0.0.0", "224.0.0.1", "239.255.255.250",
           "240.0.0.1", "255.255.255.255", "192.0.2.1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1",
           "::ffff:127.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::", "64:ff9b::a00:1", "fe80::1%eth0"]
PUBLIC = ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
          "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_guard_refuses_non_public_addresses(address):
    assert not is_public_address(address)
    with pytest.raises(PrivateAddressError):
        check_url_host(address, 80)


@pytest.mark.parametrize("address", PUBLIC)
def test_guard_lets_public_addresses_through(address):
    assert is_public_address(address)
    check_url_host(address, 80)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
                        "100.64.0.0/10", "224.0.0.0/4", "240.0.0.0/4", "0.0.0.0/8"]),
       st.integers(min_value=0, max_value=2**32 - 1), st.booleans())
def test_every_address_of_a_private_network_is_refused_in_any_form(network, n, mapped):
    net = ipaddress.ip_network(network)
    ip = net[n % net.num_addresses]
    text = f"::ffff:{ip}" if mapped else str(ip)
    assert not is_public_address(text)


def test_allowed_endpoint_is_exact():
    check_url_host("10.0.0.2", 8080, frozenset({"10.0.0.2:8080"}))
    with pytest.raises(PrivateAddressError):
        check_url_host("10.0.0.2", 8081, frozenset({"10.0.0.2:8080"}))


def test_guarded_resolver_filters_every_answer_so_dns_rebinding_cannot_slip_through():
    class Flipping:  # a DNS server that answers public first, then the metadata address (rebinding)
        answers = [["93.184.216.34", "10.0.0.7"], ["169.254.169.254"]]

        async def resolve(self, host, port=0, family=socket.AF_INET):
            return [{"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
                    for a in self.answers.pop(0)]

        async def close(self):
            pass

    async def main():
        resolver = GuardedResolver(Flipping())
        first = await resolver.resolve("rebind.example", 80)
        with pytest.raises(PrivateAddressError, match="169.254.169.254"):
            await resolver.resolve("rebind.example", 80)
        return first

    assert [a["host"] for a in asyncio.run(main())] == ["93.184.216.34"]


def _fetch_with_guard(urls, **overrides):
    async def main():
        async with Fetcher(short_options(allow_private_addresses=False, **overrides)) as fetcher:
            return await asyncio.gather(*(fetcher.fetch(u) for u in urls))

    return asyncio.run(main())


def test_loopback_server_is_refused_by_default_by_literal_and_by_name():
    hits = []

    async def image(request):
        hits.append(request.path)
        return web.Response(body=jpeg_bytes())

    async def main():
        async with serve({"/a.jpg": image}) as base:
            port = base.rsplit(":", 1)[1]
            urls = [f"{base}/a.jpg", f"http://localhost:{port}/a.jpg", f"http://[::1]:{port}/a.jpg",
                    f"http://2130706433:{port}/a.jpg"]  # 127.0.0.1 as one decimal number
            async with Fetcher(short_options(allow_private_addresses=False)) as fetcher:
                return await asyncio.gather(*(fetcher.fetch(u) for u in urls))

    *results, numeric = asyncio.run(main())
    assert [r.reason for r in results] == ["private_address"] * 3
    assert numeric.reason == "bad_url"  # legacy numeric forms are refused outright (aiohttp dials none)
    assert hits == []  # not even robots.txt was requested


def test_private_targets_are_refused_without_connecting():
    results = _fetch_with_guard(["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/a.jpg",
                                 "http://[fd00::1]/a.jpg", "http://192.168.0.1:8080/admin"])
    assert [r.reason for r in results] == ["private_address"] * 4


def test_redirect_from_an_allowed_server_to_a_private_address_is_refused():
    inner_hits = []

    async def secret(request):
        inner_hits.append(request.path)
        return web.Response(body=jpeg_bytes())

    async def main():
        async with serve({"/secret.jpg": secret}) as inner:
            inner_port = inner.rsplit(":", 1)[1]
            targets = {"/1": f"{inner}/secret.jpg", "/2": f"http://localhost:{inner_port}/secret.jpg",
                       "/3": "http://169.254.169.254/latest/meta-data/", "/4": f"http://[::1]:{inner_port}/x",
                       "/5": "http://10.1.2.3/"}

            async def redirect(request):
                raise web.HTTPFound(targets[request.path])

            async def ok(request):
                return web.Response(body=jpeg_bytes())

            async with serve({**{p: redirect for p in targets}, "/ok.jpg": ok}) as outer:
                # Only the outer server's exact endpoint is exempt, standing in for a public web server.
                endpoint = outer.removeprefix("http://")
                async with Fetcher(short_options(allow_private_addresses=False,
                                                 allowed_endpoints=(endpoint,))) as fetcher:
                    return await asyncio.gather(*(fetcher.fetch(outer + p) for p in [*targets, "/ok.jpg"]))

    *redirected, ok = asyncio.run(main())
    assert [r.reason for r in redirected] == ["private_address"] * 5
    assert ok.reason is None  # the exemption works, so the refusals above are the guard's doing
    assert inner_hits == []
