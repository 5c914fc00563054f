"""WARC files written by an independent writer (FastWARC's), not by our own test helpers: the reader must
agree with the format as other tools write it, whether each record is its own gzip member (Common Crawl)
or the whole file is one gzip stream."""

import gzip
import io

from fastwarc.warc import WarcRecord, WarcRecordType

from pipeline.read_warc import read_archive

PAGE = (b"<html><body><img src='/a.jpg' alt='A red cat'>"
        b"<figure><img src='b.png'><figcaption>Blue boat</figcaption></figure></body></html>")


def fastwarc_record(record_type, url="", http_payload=b"") -> bytes:
    record = WarcRecord()
    record.init_headers(record_type=record_type)
    if url:
        record.headers["WARC-Target-URI"] = url
    if record_type == WarcRecordType.response:
        record.headers["Content-Type"] = "application/http; msgtype=response"
    record.set_bytes_content(http_payload)
    out = io.BytesIO()
    record.write(out, checksum_data=True)
    return out.getvalue()


def records():
    http = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n" % len(PAGE)) + PAGE
    return [fastwarc_record(WarcRecordType.warcinfo, http_payload=b"software: fastwarc\r\n"),
            fastwarc_record(WarcRecordType.request, "http://x.example/dir/page.html", b"GET / HTTP/1.1\r\n\r\n"),
            fastwarc_record(WarcRecordType.response, "http://x.example/dir/page.html", http)]


def candidates(data: bytes):
    out = list(read_archive("f.warc.gz", io.BytesIO(data)))
    assert [kind for kind, _ in out] == ["candidate", "candidate"], out
    return [(r["url"], r["caption"], r["page_url"]) for _, r in out]


EXPECTED = [("http://x.example/a.jpg", "A red cat", "http://x.example/dir/page.html"),
            ("http://x.example/dir/b.png", "Blue boat", "http://x.example/dir/page.html")]


def test_one_gzip_member_per_record_as_common_crawl_writes():
    assert candidates(b"".join(gzip.compress(r, mtime=0) for r in records())) == EXPECTED


def test_whole_file_as_one_gzip_stream():
    assert candidates(gzip.compress(b"".join(records()), mtime=0)) == EXPECTED
