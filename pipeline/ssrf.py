"""The address guard: the fetcher never connects to private, loopback, link-local, multicast or reserved addresses.

A URL list scraped from the web is attacker-controlled. Without this guard a page could point us at
`http://169.254.169.254/latest/meta-data/` (cloud credentials), at `http://10.0.0.5/admin`, or at a name whose
DNS answer is `127.0.0.1`, and the worker would fetch it from inside the cluster network.

The check is made on the address actually connected to, not on the URL text:
- host names go through `GuardedResolver`, which drops every non-public address from the DNS answer before
  aiohttp's connector sees it, so the connector can only dial what passed (and its DNS cache only holds what
  passed). A name that re-resolves to a private address later (DNS rebinding) is filtered again on that lookup.
- IP literals in URLs never reach a resolver (aiohttp dials them directly), so the fetcher checks them with
  `check_url_host` before every request, redirects included.
"""

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult


class PrivateAddressError(OSError):
    """The host is, or resolves only to, addresses the guard refuses."""


def is_public_address(address: str) -> bool:
    """True when `address` (IPv4 or IPv6 text) is a globally routable unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id ("fe80::1%eth0")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that embed an IPv4 address reach that IPv4 host: judge the embedded address.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return is_public_address(str(embedded))
        if ip in _NAT64:
            return is_public_address(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
        or ip.is_unspecified
    )


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def allowed_endpoint(address: str, port: int, allowed_endpoints: frozenset[str]) -> bool:
    """An explicitly allowed "ip:port" (e.g. an internal mirror, or a test server) passes the guard."""
    ip = address.split("%", 1)[0]
    return f"{ip}:{port}" in allowed_endpoints or f"[{ip}]:{port}" in allowed_endpoints


def check_url_host(host: str, port: int, allowed_endpoints: frozenset[str] = frozenset()) -> None:
    """Raise PrivateAddressError when the URL's host is an IP literal the guard refuses.

    Names are left to GuardedResolver; only literals are judged here, because aiohttp dials them
    without resolving.
    """
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return  # a name: checked when resolved
    if not (is_public_address(host) or allowed_endpoint(host, port, allowed_endpoints)):
        raise PrivateAddressError(f"{host} is not a public address")


class GuardedResolver(AbstractResolver):
    """Wraps a real resolver and keeps only public addresses (plus explicitly allowed endpoints)."""

    def __init__(self, inner: AbstractResolver, allowed_endpoints: frozenset[str] = frozenset()):
        self._inner = inner
        self._allowed_endpoints = allowed_endpoints

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        kept = [a for a in answers
                if is_public_address(a["host"]) or allowed_endpoint(a["host"], a["port"], self._allowed_endpoints)]
        if not kept:
            refused = ", ".join(sorted({a["host"] for a in answers}))
            raise PrivateAddressError(f"{host} resolves only to non-public addresses ({refused})")
        return kept

    async def close(self) -> None:
        await self._inner.close()
