"""Common Crawl WARC and WAT sources on real-format files written here (one gzip member per record), including
the damaged records a crawl of billions of pages contains: each becomes one counted reject, never a crash."""

import gzip
import io
import json

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from openwit.errors import InputError
from pipeline.read_warc import REASONS, ReadWarc, ReadWat, iter_gzip_members, read_archive

PAGE = b"""<!doctype html><html><head><title>t</title></head><body>
<img src="/img/cat.jpg" alt="A cat on a sofa" title="Cat">
<img src="/img/cat.jpg" alt="A cat on a sofa">
</body></html>"""


def warc_record(headers: dict, block: bytes, content_length: int | None = None) -> bytes:
    """A WARC/1.0 record as Common Crawl writes it: headers, block, CRLF CRLF."""
    lines = [b"WARC/1.0"] + [f"{k}: {v}".encode() for k, v in headers.items()]
    lines.append(f"Content-Length: {len(block) if content_length is None else content_length}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + block + b"\r\n\r\n"


def response(url: str, body: bytes, content_type="text/html; charset=utf-8", status="200 OK",
             extra_http: bytes = b"", content_length: int | None = None) -> bytes:
    http = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n".encode() + extra_http
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    headers = {"WARC-Type": "response", "WARC-Target-URI": url, "WARC-Record-ID": f"<urn:uuid:{abs(hash(url))}>",
               "Content-Type": "application/http; msgtype=response"}
    return warc_record(headers, http, None if content_length is None else len(http) + content_length)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def read(data: bytes, kind="warc", max_page_bytes=1_000_000):
    out = list(read_archive("f.warc.gz", io.BytesIO(data), kind, max_page_bytes))
    return [r for t, r in out if t == "candidate"], [r for t, r in out if t == "reject"]


def test_good_records_give_deduplicated_candidates_with_sources():
    info = gz(warc_record({"WARC-Type": "warcinfo"}, b"software: test\r\n"))
    request = gz(warc_record({"WARC-Type": "request", "WARC-Target-URI": "http://a.com/p"}, b"GET /p HTTP/1.1\r\n\r\n"))
    page = gz(response("http://a.com/p", PAGE))
    candidates, rejects = read(info + request + page)
    assert rejects == []
    source = f"warc:f.warc.gz#{len(info) + len(request)}"
    assert candidates == [
        {"url": "http://a.com/img/cat.jpg", "caption": "A cat on a sofa", "page_url": "http://a.com/p",
         "source": source},
        {"url": "http://a.com/img/cat.jpg", "caption": "Cat", "page_url": "http://a.com/p", "source": source},
    ]
    # The offset is where the record's member starts: it reads back on its own, as with Common Crawl's index.
    data = info + request + page
    assert b"http://a.com/p" in gzip.decompress(data[len(info) + len(request):])


def test_chunked_gzip_encoded_and_latin1_pages_are_decoded():
    body = '<img src="x.png" alt="Café crème">'.encode("latin-1")
    chunked = hex(len(gz(body)))[2:].encode() + b"\r\n" + gz(body) + b"\r\n0\r\n\r\n"
    http = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=iso-8859-1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Encoding: gzip\r\n\r\n" + chunked)
    record = warc_record({"WARC-Type": "response", "WARC-Target-URI": "http://b.org/",
                          "Content-Type": "application/http; msgtype=response"}, http)
    meta = response("http://c.org/", '<meta charset="windows-1251"><img src="y.png" alt="Кошка">'.encode("cp1251"),
                    content_type="text/html")
    candidates, rejects = read(gz(record) + gz(meta))
    assert rejects == []
    assert [(c["url"], c["caption"]) for c in candidates] == [("http://b.org/x.png", "Café crème"),
                                                                 ("http://c.org/y.png", "Кошка")]


def test_malformed_records_become_one_reject_each_and_reading_goes_on():
    good = gz(response("http://ok.com/1", PAGE))
    truncated_middle = gz(response("http://cut.com/", PAGE))[:-30]
    records = [
        good,
        gz(response("http://short.com/", PAGE, content_length=-10)),  # Content-Length too small
        gz(response("http://long.com/", PAGE, content_length=+25)),  # Content-Length too large
        gz(response("http://img.com/a.jpg", b"\xff\xd8\xff\xe0JFIF", content_type="image/jpeg")),
        gz(response("http://bin.com/", bytes(range(256)) * 20, content_type="text/html; charset=utf-8")),
        gz(response("http://moved.com/", b"", status="301 Moved Permanently")),
        gz(response("http://huge.com/", b"<p>" + b"x" * 300_000 + b"</p>")),
        truncated_middle,
        good,
        b"garbage between members",
        gz(b"this is not a WARC record\r\n\r\n"),
        gz(response("http://end.com/", PAGE))[:-5],  # the file ends inside the last member
    ]
    candidates, rejects = read(b"".join(records), max_page_bytes=200_000)
    assert [c["page_url"] for c in candidates] == ["http://ok.com/1"] * 2 + ["http://ok.com/1"] * 2
    got = [(r["url"], r["reason"]) for r in rejects]
    assert got == [
        ("http://short.com/", "bad_content_length"),
        ("http://long.com/", "bad_content_length"),
        ("http://img.com/a.jpg", "not_html"),
        ("http://bin.com/", "bad_encoding"),
        ("http://moved.com/", "http_status"),
        ("http://huge.com/", "too_large"),
        ("http://cut.com/", "corrupt_gzip"),
        ("", "not_gzip"),
        ("", "bad_record"),
        ("http://end.com/", "truncated_gzip"),
    ]
    assert all(r["stage"] == "read" and r["reason"] in REASONS for r in rejects)
    offsets = [int(r["source"].rsplit("#", 1)[1]) for r in rejects]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_gzip_bomb_is_a_reject_with_flat_memory():
    bomb = gz(response("http://bomb.com/", b"<p>" + b"\0" * 50_000_000))  # 50 MB of zeros, ~50 kB compressed
    members = list(iter_gzip_members(io.BytesIO(bomb + gz(b"WARC/1.0\r\n")), max_bytes=1_000_000))
    assert [(m.error, len(m.data or b"")) for m in members] == [("too_large", 0), (None, 10)]
    assert b"http://bomb.com/" in members[0].head and len(members[0].head) <= 64 * 1024


def wat_record(url: str, envelope_type="response", html_meta=None, body: bytes | None = None) -> bytes:
    payload = {"Actual-Content-Type": "application/http; msgtype=response"}
    if envelope_type == "response":
        payload["HTTP-Response-Metadata"] = {"Response-Message": {"Status": "200"}}
        if html_meta is not None:
            payload["HTTP-Response-Metadata"]["HTML-Metadata"] = html_meta
    envelope = {"Format": "WARC", "WARC-Header-Metadata": {"WARC-Type": envelope_type, "WARC-Target-URI": url},
                "Payload-Metadata": payload}
    block = body if body is not None else json.dumps({"Container": {}, "Envelope": envelope}).encode()
    return gz(warc_record({"WARC-Type": "metadata", "WARC-Target-URI": url, "Content-Type": "application/json"},
                          block))


def test_wat_links_give_candidates_as_metaclip_reads_them():
    links = [
        {"path": "A@/href", "url": "/about", "text": "About us"},
        {"path": "IMG@/src", "url": "pics/dog.jpg", "alt": "A dog", "title": "Rex"},
        {"path": "IMG@/src", "url": "pics/dog.jpg", "alt": "A dog"},
        {"path": "IMG@/src", "url": "data:image/png;base64,AAAA", "alt": "inline"},
        {"path": "IMG@/src", "url": "https://cdn.x/y.png"},
    ]
    data = (wat_record("http://w.com/a/", html_meta={"Head": {"Base": "http://w.com/base/"}, "Links": links})
            + wat_record("http://w.com/a/", envelope_type="request")
            + wat_record("http://w.com/img.jpg", html_meta=None)
            + wat_record("http://w.com/broken", body=b"{not json")
            + wat_record("http://w.com/b", html_meta={"Links": [{"path": "IMG@/src", "url": "z.gif",
                                                                 "data-image-title": "Zebra"}]}))
    candidates, rejects = read(data, kind="wat")
    assert [(c["url"], c["caption"], c["page_url"]) for c in candidates] == [
        ("http://w.com/base/pics/dog.jpg", "A dog", "http://w.com/a/"),
        ("http://w.com/base/pics/dog.jpg", "Rex", "http://w.com/a/"),
        ("http://w.com/z.gif", "Zebra", "http://w.com/b"),
    ]
    assert all(c["source"].startswith("wat:f.warc.gz#") for c in candidates)
    assert [(r["url"], r["reason"]) for r in rejects] == [("http://w.com/img.jpg", "not_html"),
                                                          ("http://w.com/broken", "bad_json")]


@pytest.mark.timeout(120)
def test_beam_sources_read_globs_of_files_in_one_run(tmp_path):
    for i in range(3):
        (tmp_path / f"crawl-{i}.warc.gz").write_bytes(
            gz(response(f"http://site{i}.com/", PAGE)) + gz(response(f"http://bad{i}.com/", b"", status="404 No")))
    (tmp_path / "links.wat.gz").write_bytes(
        wat_record("http://w.com/", html_meta={"Links": [{"path": "IMG@/src", "url": "/k.jpg", "alt": "Kite"}]}))

    with beam.Pipeline(runner=FnApiRunner()) as p:
        warc_candidates, warc_rejects = p | "Warc" >> ReadWarc([str(tmp_path / "crawl-*.warc.gz")])
        wat_candidates, wat_rejects = p | "Wat" >> ReadWat([str(tmp_path / "*.wat.gz")])
        candidates = (warc_candidates, wat_candidates) | beam.Flatten()
        assert_that(candidates | beam.Map(lambda c: (c["url"], c["caption"])), equal_to(
            [(f"http://site{i}.com/img/cat.jpg", text) for i in range(3) for text in ("A cat on a sofa", "Cat")]
            + [("http://w.com/k.jpg", "Kite")]), label="candidates")
        assert_that(warc_rejects | beam.Map(lambda r: (r["url"], r["reason"])),
                    equal_to([(f"http://bad{i}.com/", "http_status") for i in range(3)]), label="rejects")


def test_a_pattern_matching_no_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="--warc .*no file matches"):
        ReadWarc([str(tmp_path / "missing-*.warc.gz")])


def test_a_member_cut_short_mid_file_never_swallows_the_records_after_it():
    """A damaged member's deflate stream can inflate the members after it as its own data, without a zlib error,
    up to the end of the file (each of these pairs of record ids did before the fix, losing the good record):
    the rest of the file must still be read, and the damaged member counted as corrupt, not as the file's end."""
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(PAGE) + PAGE

    def record(url, record_id):
        headers = {"WARC-Type": "response", "WARC-Target-URI": url, "WARC-Record-ID": f"<urn:uuid:{record_id}>",
                   "Content-Type": "application/http; msgtype=response"}
        return gz(warc_record(headers, http))

    for cut_id, good_id in [(3, 1), (5, 10), (8, 22), (13, 1)]:
        candidates, rejects = read(record("http://cut.com/", cut_id)[:-30] + record("http://ok.com/1", good_id))
        assert [(r["url"], r["reason"]) for r in rejects] == [("http://cut.com/", "corrupt_gzip")], (cut_id, good_id)
        assert [c["page_url"] for c in candidates] == ["http://ok.com/1"] * 2, (cut_id, good_id)
