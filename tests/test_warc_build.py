"""WARC, WAT and page-list sources inside the whole build, combined in one run, on the demo web (127.0.0.1)."""

import glob
import gzip
import json
import os

import pyarrow.parquet as pq
import pytest

from pipeline import build_wit
from pipeline.html_extract import extract_images

pytestmark = pytest.mark.timeout(600)


def _record(url: str, body: bytes) -> bytes:
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + body
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n").encode()
    return gzip.compress(head + http + b"\r\n\r\n", mtime=0)


def _wat_record(url: str, links: list[dict]) -> bytes:
    envelope = {"WARC-Header-Metadata": {"WARC-Type": "response", "WARC-Target-URI": url},
                "Payload-Metadata": {"HTTP-Response-Metadata": {"Response-Message": {"Status": "200"},
                                                                "HTML-Metadata": {"Links": links}}}}
    block = json.dumps({"Envelope": envelope}).encode()
    head = (f"WARC/1.0\r\nWARC-Type: metadata\r\nWARC-Target-URI: {url}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(block)}\r\n\r\n").encode()
    return gzip.compress(head + block + b"\r\n\r\n", mtime=0)


def test_warc_wat_and_page_list_in_one_build(demo_site, demo_url, demo_inputs, tmp_path):
    _pairs, queries = demo_inputs
    pages = sorted({page for _, _, page in demo_site.pairs})
    warc_pages, wat_pages, crawl_pages = pages[0::3], pages[1::3], pages[2::3]

    expected = set()  # (image url, caption) the three sources must bring in
    warc = b""
    for page in warc_pages:
        body = demo_site.files[page][0]
        warc += _record(demo_url + page, body)
        expected |= set(extract_images(body, demo_url + page))
    warc += _record("http://broken.example/", b"<img src=a.jpg alt='lost'>")[:-12]  # truncated member
    (tmp_path / "crawl.warc.gz").write_bytes(warc)

    wat = b""
    for page in wat_pages:
        links = [{"path": "IMG@/src", "url": url, "alt": caption}
                 for url, caption in extract_images(demo_site.files[page][0], demo_url + page)]
        wat += _wat_record(demo_url + page, links)
        expected |= {(link["url"], link["alt"]) for link in links}
    (tmp_path / "crawl.wat.gz").write_bytes(wat)

    (tmp_path / "pages.txt").write_text("".join(demo_url + page + "\n" for page in crawl_pages))
    # The demo's robots.txt disallows /private/: crawling that page is a read reject, its images no candidates.
    disallowed = [page for page in crawl_pages if page.startswith("/private/")]
    assert disallowed
    for page in crawl_pages:
        if page not in disallowed:
            expected |= set(extract_images(demo_site.files[page][0], demo_url + page))

    output = str(tmp_path / "out")
    assert build_wit.main([
        "--warc", str(tmp_path / "*.warc.gz"), "--wat", str(tmp_path / "crawl.wat.gz"),
        "--page-urls", str(tmp_path / "pages.txt"), "--queries", queries, "--output", output,
        "--samples-per-shard", "40", "--allow-private-addresses", "--image-size", "64", "--direct_num_workers=1"]) == 0

    rows = [r for p in glob.glob(os.path.join(output, "shards", "*.parquet")) for r in pq.read_table(p).to_pylist()]
    rejects = [r for p in glob.glob(os.path.join(output, "rejects", "*.parquet")) for r in pq.read_table(p).to_pylist()]
    with open(os.path.join(output, "stats.json")) as f:
        stats = json.load(f)
    # Nothing is lost: every candidate of every source and the damaged record end in a shard or in rejects.
    assert stats["candidates"] == len(expected) + 1 + len(disallowed) == len(rows) + len(rejects)
    assert {(r["url"], r["reason"]) for r in rejects if r["stage"] == "read"} == {
        ("http://broken.example/", "truncated_gzip")} | {(demo_url + page, "robots_disallowed") for page in disallowed}
    from_sources = {r["url"] for r in rows} | {r["url"] for r in rejects if r["stage"] != "read"}
    assert from_sources == {url for url, _ in expected}
    assert stats["kept"] > 0
