"""Shared helpers for the fetcher tests: real aiohttp servers on 127.0.0.1 and small real images."""

import asyncio
import contextlib
import io

from aiohttp import web
from PIL import Image

from pipeline.fetch import Fetcher, FetchOptions


def jpeg_bytes(size=(64, 48), color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG", quality=90)
    return out.getvalue()


@contextlib.asynccontextmanager
async def serve(routes: dict, host: str = "127.0.0.1"):
    """Serve {path: handler} on an ephemeral port of `host`; yields the base URL "http://host:port"."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    finally:
        await runner.cleanup()


def short_options(**overrides) -> FetchOptions:
    """Short limits so every hostile case ends quickly; loopback allowed unless a test says otherwise."""
    defaults = dict(timeout_s=2.0, max_bytes=1_000_000, allow_private_addresses=True, retries=0,
                    retry_backoff_s=0.01)
    defaults.update(overrides)
    return FetchOptions(**defaults)


def fetch_all(routes: dict, paths: list[str], page: bool = False, **overrides):
    """Serve `routes`, fetch every path (concurrently, one Fetcher), return the FetchResults in order."""

    async def main():
        async with serve(routes) as base:
            async with Fetcher(short_options(**overrides)) as fetcher:
                get = fetcher.fetch_page if page else fetcher.fetch
                return await asyncio.gather(*(get(p if "://" in p else base + p) for p in paths))

    return asyncio.run(main())


class DnsServer:
    """A DNS server on 127.0.0.1 (UDP, ephemeral port) answering from `zone`, so no test asks the real resolver.

    zone: {name: [(type, address, ttl), ...]}, e.g. {"xn--bcher-kva.de": [("A", "127.0.0.1", 300)]}; names are
    stored and matched in ASCII (punycode), as they travel in DNS. A name not in the zone answers NXDOMAIN; one
    whose value is "SERVFAIL" answers that. `queries` lists every (name, type) asked, to count cache misses.

        with DnsServer(zone) as server:
            FetchOptions(dns_servers=(server.address,))   # "127.0.0.1:port"
    """

    def __init__(self, zone: dict):
        from dnslib import QTYPE, RCODE, RR
        from dnslib.server import BaseResolver, DNSLogger, DNSServer

        self.zone = {name.lower().rstrip("."): records for name, records in zone.items()}
        self.queries: list[tuple[str, str]] = []
        outer = self

        class ZoneResolver(BaseResolver):
            def resolve(self, request, handler):
                reply = request.reply()
                name, qtype = str(request.q.qname).lower().rstrip("."), QTYPE[request.q.qtype]
                outer.queries.append((name, qtype))
                records = outer.zone.get(name)
                if records is None:
                    reply.header.rcode = RCODE.NXDOMAIN
                elif records == "SERVFAIL":
                    reply.header.rcode = RCODE.SERVFAIL
                else:
                    for rtype, address, ttl in records:
                        if rtype == qtype:
                            reply.add_answer(*RR.fromZone(f"{name}. {ttl} IN {rtype} {address}"))
                return reply

        self._server = DNSServer(ZoneResolver(), port=0, address="127.0.0.1",
                                 logger=DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data",
                                                  logf=lambda _: None))
        self.address = "127.0.0.1:%d" % self._server.server.server_address[1]

    def __enter__(self) -> "DnsServer":
        self._server.start_thread()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()
        self._server.server.server_close()
