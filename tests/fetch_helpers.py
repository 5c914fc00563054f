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
