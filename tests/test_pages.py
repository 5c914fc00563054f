"""The page-list source: real pages served on 127.0.0.1, crawled with the project's fetcher, through Beam."""

import asyncio
import threading

import apache_beam as beam
import pytest
from aiohttp import web
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from openwit.errors import InputError
from pipeline.fetch import FetchOptions
from pipeline.read_pages import ReadPages, crawl_pages

PAGES = {
    "/robots.txt": (b"User-agent: *\nDisallow: /private\n", "text/plain"),
    "/gallery/": (b'<img src="cat.jpg" alt="A cat asleep"><img src="/dog.png" title="Dog">', "text/html"),
    "/latin": ('<img src="caf\u00e9.jpg" alt="Caf\u00e9 au lait">'.encode("latin-1"),
               "text/html; charset=ISO-8859-1"),
    "/private/page": (b'<img src="secret.jpg" alt="Secret">', "text/html"),
    "/photo.jpg": (b"\xff\xd8\xff\xe0 not a page", "image/jpeg"),
}


async def _handler(request: web.Request) -> web.StreamResponse:
    if request.path == "/old":
        raise web.HTTPMovedPermanently("/gallery/")
    if request.path not in PAGES:
        raise web.HTTPNotFound()
    body, content_type = PAGES[request.path]
    return web.Response(body=body, headers={"Content-Type": content_type})


class ThreadedServer:
    """An aiohttp server on 127.0.0.1 in its own thread, so synchronous code (Beam) can crawl it."""

    def __enter__(self) -> str:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def start():
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", _handler)
            self.runner = web.AppRunner(app, shutdown_timeout=0.1)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            self.base = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
            started.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()), self.loop.run_forever()),
                                       daemon=True)
        self.thread.start()
        started.wait(10)
        return self.base

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


OPTIONS = FetchOptions(allow_private_addresses=True, timeout_s=5.0, retries=0)


@pytest.mark.timeout(60)
def test_crawl_extracts_pages_and_rejects_the_rest():
    with ThreadedServer() as base:
        urls = [f"{base}/gallery/", f"{base}/old", f"{base}/latin", f"{base}/private/page", f"{base}/photo.jpg",
                f"{base}/missing"]
        results = asyncio.run(crawl_pages(urls, OPTIONS, batch=2))
    candidates = [(c["url"], c["caption"], c["page_url"], c["source"]) for found, _ in results for c in found]
    assert candidates == [
        (f"{base}/gallery/cat.jpg", "A cat asleep", f"{base}/gallery/", f"page:{base}/gallery/"),
        (f"{base}/dog.png", "Dog", f"{base}/gallery/", f"page:{base}/gallery/"),
        # A redirected page's images resolve against where it landed.
        (f"{base}/gallery/cat.jpg", "A cat asleep", f"{base}/gallery/", f"page:{base}/old"),
        (f"{base}/dog.png", "Dog", f"{base}/gallery/", f"page:{base}/old"),
        (f"{base}/caf\u00e9.jpg", "Caf\u00e9 au lait", f"{base}/latin",
         f"page:{base}/latin"),
    ]
    rejects = [(r["url"], r["reason"], r["stage"]) for _, r in results if r is not None]
    assert rejects == [
        (f"{base}/private/page", "robots_disallowed", "read"),
        (f"{base}/photo.jpg", "not_html", "read"),
        (f"{base}/missing", "http_404", "read"),
    ]


@pytest.mark.timeout(120)
def test_beam_source_reads_url_lists_and_crawls(tmp_path):
    with ThreadedServer() as base:
        listing = tmp_path / "pages.txt"
        listing.write_text(f"# pages to crawl\n{base}/gallery/\n\n{base}/gallery/\nnot a url\n{base}/missing\n")
        with beam.Pipeline(runner=FnApiRunner()) as p:
            candidates, rejects = p | ReadPages([str(listing)], OPTIONS)
            assert_that(candidates | beam.Map(lambda c: (c["url"], c["caption"])), equal_to(
                [(f"{base}/gallery/cat.jpg", "A cat asleep"), (f"{base}/dog.png", "Dog")]), label="candidates")
            assert_that(rejects | beam.Map(lambda r: (r["url"], r["reason"], r["source"])), equal_to(
                [("not a url", "bad_url", f"pages:{listing}:5"), (f"{base}/missing", "http_404", f"page:{base}/missing")]),
                label="rejects")


def test_missing_url_list_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="--page-urls"):
        ReadPages([str(tmp_path / "nope.txt")])


def test_compressed_url_list_reads_like_a_plain_one(tmp_path):
    import gzip

    from pipeline.read_pages import read_url_list

    lines = "# pages\nhttp://a.example/p1\n\nnot a url\nhttps://b.example/x?y=1\n"
    (tmp_path / "pages.txt").write_text(lines)
    with gzip.open(tmp_path / "pages.txt.gz", "wt") as f:
        f.write(lines)
    plain = list(read_url_list(str(tmp_path / "pages.txt")))
    assert plain == list(read_url_list(str(tmp_path / "pages.txt.gz")))
    assert [(n, url) for n, url, _ in plain] == [(2, "http://a.example/p1"), (4, None), (5, "https://b.example/x?y=1")]
