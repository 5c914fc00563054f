"""Back-off and stalls against a loopback server (issue 16, items 7-8): a 429's Retry-After is kept even when
the host's slots are held by stalled requests, a body whose bytes stopped coming ends in `stalled`, and a
failure keeps its HTTP status and detail. Timings are loose (2 shared cores): each bound is far below what the
old behaviour took."""

import asyncio
import time

import pytest
from aiohttp import web

from fetch_helpers import fetch_all, jpeg_bytes, serve, short_options
from pipeline.fetch import Fetcher
from pipeline.fetch import FetchResult
from pipeline.resize import ImageOptions
from pipeline.samples import ERROR_DETAIL_MAX_CHARS, SampleMaker

pytestmark = pytest.mark.timeout(120)
JPEG = jpeg_bytes()


async def stall_body(request):
    resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
    await resp.prepare(request)
    await resp.write(JPEG[:200])
    await asyncio.sleep(3600)  # the bytes stop coming; the server's cleanup cancels this
    return resp


async def stall_headers(_request):
    await asyncio.sleep(3600)
    return web.Response()


def test_retry_after_is_not_queued_behind_stalled_requests():
    answered = []

    async def busy(_request):
        answered.append(time.monotonic())
        if len(answered) == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(body=JPEG, content_type="image/jpeg")

    async def main():
        async with serve({"/busy": busy, "/stall/{i}": stall_body}) as base:
            # Two slots for the host; the stalls would hold them for the whole 60 s timeout.
            options = short_options(per_host_concurrency=2, timeout_s=60, stall_timeout_s=60, retries=1,
                                    respect_robots=False)
            async with Fetcher(options) as fetcher:
                started = time.monotonic()
                first = asyncio.ensure_future(fetcher.fetch(base + "/busy"))
                stalls = [asyncio.ensure_future(fetcher.fetch(f"{base}/stall/{i}")) for i in range(3)]
                try:
                    result = await asyncio.wait_for(first, 20)
                    return result, time.monotonic() - started
                finally:
                    for task in stalls:
                        task.cancel()
                    await asyncio.gather(*stalls, return_exceptions=True)

    result, elapsed = asyncio.run(main())
    assert result.reason is None and result.attempts == 2
    assert len(answered) == 2 and answered[1] - answered[0] >= 0.9  # the host's Retry-After was honoured
    assert elapsed < 10  # about 1 s; behind the stalls it took the 60 s timeout


@pytest.mark.parametrize("path", ["/stall-body", "/stall-headers"])
def test_stalled_request_ends_early_and_frees_its_slot(path):
    started = time.monotonic()
    [result] = fetch_all({"/stall-body": stall_body, "/stall-headers": stall_headers}, [path],
                         timeout_s=30, stall_timeout_s=0.5)
    assert result.reason == "stalled" and "0.5s" in result.error_message
    assert time.monotonic() - started < 10  # the 30 s timeout would have ended it as "timeout"


def test_204_and_unlisted_status_keep_their_code():
    async def no_content(_request):
        return web.Response(status=204)

    async def odd(_request):
        return web.Response(status=599, text="busy")

    results = fetch_all({"/empty": no_content, "/odd": odd}, ["/empty", "/odd"])
    assert [(r.reason, r.http_status) for r in results] == [("http_204", 204), ("http_other", 599)]


def test_shard_rows_keep_http_status_and_a_bounded_detail():
    maker = SampleMaker(ImageOptions())
    candidate = {"key": "000000000", "url": "http://a.example/x.jpg", "caption": "c", "queries": [1],
                 "page_url": ""}
    row, files = maker.sample(candidate, FetchResult(
        url=candidate["url"], body=None, reason="http_other", http_status=599, error_message="x" * 10_000))
    assert (row["error_message"], row["http_status"], files) == ("http_other", 599, [])
    assert row["error_detail"] == "x" * ERROR_DETAIL_MAX_CHARS
    row, _ = maker.sample(candidate, FetchResult(url=candidate["url"], body=b"<html>", reason=None, http_status=200))
    assert row["error_message"] == "not_an_image" and row["http_status"] == 200 and row["error_detail"]
    row, files = maker.sample(candidate, FetchResult(url=candidate["url"], body=JPEG, reason=None, http_status=200))
    assert row["status"] == "success" and row["http_status"] == 200 and row["error_detail"] is None
