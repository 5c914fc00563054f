"""Name resolution at crawl scale: c-ares (through aiodns) instead of the system resolver, with a per-worker cache
that honours each answer's TTL.

Why not the system resolver: aiohttp's default calls getaddrinfo() in a thread pool, one blocked thread per
lookup, through the machine's stub resolver; at crawl rates that stub (or the cloud's metadata DNS behind it)
drops queries, and img2dataset users report up to 70% of fetches failing as DNS errors. c-ares speaks DNS
itself, asynchronously, with many queries in flight from one event loop, to the servers of `--dns-servers`
(a local caching resolver, or public ones) or else those of /etc/resolv.conf; it reads /etc/hosts first.

The cache lives as long as the worker (ShardBuilder keeps one, like the robots.txt cache): a worker builds shard
after shard, each in its own event loop with its own resolver, and a host spans neighbouring shards. An answer is
kept for its TTL (at most `max_ttl_s`); a name that does not exist (NXDOMAIN) is remembered for
NEGATIVE_TTL_S so that a dead host with thousands of URLs costs one query. Timeouts and server failures are
not cached: the next URL asks again. The cache holds raw answers: pipeline/ssrf.py's GuardedResolver wraps this
resolver and filters every answer, cached or not.

Failures raise DnsError (an OSError), which aiohttp reports as ClientConnectorDNSError: the fetcher counts
them as `dns_error`, apart from `connection_error` (the name resolved, the connection failed).
"""

import asyncio
import ipaddress
import socket
import time
from collections import OrderedDict

import aiodns
from aiohttp.abc import AbstractResolver, ResolveResult

from openwit.errors import InputError

NEGATIVE_TTL_S = 60.0  # how long "no such name" is believed (RFC 2308 lets servers say; one minute is modest)
_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV  # what aiohttp expects of already-resolved answers


class DnsError(OSError):
    """A name could not be resolved: no such name, no address, or the DNS servers failed or did not answer."""


def check_servers(servers: tuple[str, ...]) -> None:
    """Raise InputError unless every server is an IP address, optionally with a port: 1.1.1.1, 127.0.0.1:5353,
    [2606:4700:4700::1111]:53 (what c-ares accepts; names would need a resolver to find the resolver)."""
    for server in servers:
        host, port = server, None
        if server.startswith("["):
            host, _, rest = server[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else (None if not rest else "bad")
        elif server.count(":") == 1:
            host, port = server.split(":")
        try:
            ipaddress.ip_address(host)
            if port is not None and not 0 < int(port) < 65536:
                raise ValueError(port)
        except ValueError:
            raise InputError(f"--dns-servers: {server!r} is not an IP address with an optional port "
                             "(e.g. 1.1.1.1,8.8.8.8 or 127.0.0.1:5353 or [::1]:53)") from None


class DnsCache:
    """Answers per (host, family) until their TTL runs out; bounded, the oldest entries go first.
    `clock` is injectable so tests can move time instead of sleeping."""

    def __init__(self, max_entries: int = 100_000, clock=time.monotonic):
        self.max_entries, self.clock = max_entries, clock
        self._entries: OrderedDict[tuple, tuple[float, list | DnsError]] = OrderedDict()

    def get(self, key: tuple) -> "list[ResolveResult] | DnsError | None":
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self.clock() >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: tuple, value: "list[ResolveResult] | DnsError", ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        self._entries[key] = (self.clock() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class CaresResolver(AbstractResolver):
    """aiohttp resolver over c-ares, with the worker's DnsCache. One per Fetcher (c-ares binds to the event loop);
    concurrent lookups of one name share one query."""

    def __init__(self, cache: DnsCache, servers: tuple[str, ...] = (), timeout_s: float = 2.0,
                 max_ttl_s: float = 300.0):
        # c-ares waits timeout_s for the first try and doubles it for the second: a dead DNS server ends in
        # dns_error after about 3 * timeout_s.
        self._resolver = aiodns.DNSResolver(nameservers=list(servers) or None, timeout=timeout_s, tries=2)
        self._cache, self._max_ttl_s = cache, max_ttl_s
        self._pending: dict[tuple, asyncio.Future] = {}

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        key = (host.lower(), family)
        answer = self._cache.get(key)
        if answer is None:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = asyncio.ensure_future(self._lookup(key))
                pending.add_done_callback(lambda _: self._pending.pop(key, None))
            answer = await asyncio.shield(pending)
        if isinstance(answer, DnsError):
            raise DnsError(*answer.args)
        return [{**a, "hostname": host, "port": port} for a in answer]

    async def _lookup(self, key: tuple) -> "list[ResolveResult] | DnsError":
        host, family = key
        try:
            result = await self._resolver.getaddrinfo(host, family=family, port=0, type=socket.SOCK_STREAM)
        except aiodns.error.DNSError as e:
            code, message = (e.args + (None, "DNS lookup failed"))[:2]
            error = DnsError(None, f"{host}: {message} (c-ares code {code})")
            if code in (aiodns.error.ARES_ENOTFOUND, aiodns.error.ARES_ENONAME):
                self._cache.put(key, error, NEGATIVE_TTL_S)
            return error
        answers = [
            ResolveResult(hostname=host, host=node.addr[0].decode("ascii"), port=0, family=node.family, proto=0,
                          flags=_NUMERIC)
            for node in result.nodes if node.family in (socket.AF_INET, socket.AF_INET6)
        ]
        if not answers:
            return DnsError(None, f"{host}: no address in the DNS answer")
        # The smallest TTL of the answer: the first record to expire invalidates the set. /etc/hosts entries
        # come with TTL 0 and are read again each time, which costs a file read, not a query.
        self._cache.put(key, answers, min(min(node.ttl for node in result.nodes), self._max_ttl_s))
        return answers

    async def close(self) -> None:
        await self._resolver.close()
