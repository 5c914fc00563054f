"""Candidates from Common Crawl archives: WARC files (HTML responses) and WAT files (JSON link metadata).

Common Crawl writes one gzip member per record, so a file is read member by member with zlib: a damaged member
(truncated, corrupt, oversized) costs only its own record, which becomes a reject naming the record's target
URI, and reading resumes at the next member. Inside a member, fastwarc parses the WARC record and its HTTP
response (chunked and compressed payloads decoded); html_extract turns the page into (image URL, caption) pairs.

`read_archive` is the plain-Python core (one file in, candidates and rejects out); `ReadWarc` and `ReadWat` are
the Beam sources, one element per file so many files are read in parallel. Offsets in `source`
("warc:FILE#OFFSET") are the compressed offsets of the member, the same offsets Common Crawl's index gives.
"""

import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from openwit.files import expand_patterns
from pipeline.html_extract import HTML_TYPES, TEXT_ATTRIBUTES, absolute_http_url, decode_html, extract_images

STAGE = "read"
REASONS = {
    "unreadable_file": "the archive file could not be opened or read",
    "not_gzip": "bytes that are not a gzip member where a record should start",
    "truncated_gzip": "the file ends inside a gzip member (an interrupted download or copy)",
    "corrupt_gzip": "a gzip member does not decompress (damaged bytes)",
    "bad_record": "the WARC record headers cannot be parsed",
    "bad_content_length": "the WARC Content-Length does not match the record's block",
    "bad_http": "the archived HTTP response cannot be parsed",
    "http_status": "the archived response is not HTTP 200",
    "not_html": "the response is not an HTML page",
    "bad_encoding": "the page does not decode in its declared charset, UTF-8 or windows-1252",
    "too_large": "the record is larger than --max-page-bytes",
    "bad_json": "the WAT record is not the JSON metadata Common Crawl writes",
}
DEFAULT_MAX_PAGE_BYTES = 5 * 1024 * 1024  # Common Crawl itself truncates payloads at 1 MiB

_GZIP_MAGIC = b"\x1f\x8b\x08"
_READ_SIZE = 1 << 20
_PIECE = 64 * 1024  # input fed to zlib at once: bounds the output a gzip bomb can produce per step
_HEAD_KEEP = 64 * 1024  # decompressed bytes kept from a damaged member, to name its record
_HEADER_ROOM = 256 * 1024  # WARC + HTTP headers on top of the page itself
_TARGET_URI = re.compile(rb"\r?\nWARC-Target-URI:[ \t]*<?([^\r\n>]*)", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"\r\nContent-Length:[ \t]*(\d+)[ \t]*(?=\r\n)", re.IGNORECASE)


@dataclass
class Member:
    offset: int  # of the member in the (compressed) file
    data: bytes | None  # decompressed content, None when damaged
    error: str | None = None  # a REASONS key when damaged
    head: bytes = b""  # start of the decompressed content of a damaged member


def iter_gzip_members(stream, max_bytes: int) -> Iterator[Member]:
    """Every gzip member of a stream, decompressed; a damaged member is reported and skipped.

    Memory stays near max_bytes whatever the input: an oversized member is decompressed to its end (to find the
    next one) but its output is dropped.
    """
    buf, base, at_eof = bytearray(), 0, False  # buf holds the file from offset `base` on

    def read_more() -> bool:
        nonlocal at_eof
        chunk = b"" if at_eof else stream.read(_READ_SIZE)
        at_eof = not chunk
        buf.extend(chunk)
        return bool(chunk)

    def drop_until(offset: int) -> None:
        nonlocal base
        del buf[: offset - base]
        base = offset

    def find_magic(start: int) -> int | None:
        while True:
            found = buf.find(_GZIP_MAGIC, start - base)
            if found >= 0:
                return base + found
            start = max(start, base + len(buf) - len(_GZIP_MAGIC) + 1)
            if not read_more():
                return None

    offset = 0
    while True:
        while len(buf) - (offset - base) < len(_GZIP_MAGIC) and read_more():
            pass
        if offset - base >= len(buf):
            return
        if bytes(buf[offset - base : offset - base + 3]) != _GZIP_MAGIC:
            next_member = find_magic(offset + 1)
            yield Member(offset, None, "not_gzip")
            if next_member is None:
                return
            drop_until(next_member)
            offset = next_member
            continue

        inflater = zlib.decompressobj(31)
        parts, size, error, position, resync_from = [], 0, None, offset, offset + 1
        while not inflater.eof:
            if error == "too_large":
                # The member still decompresses, so read on to its end to find the next one, dropping what
                # is behind: memory stays flat however large it is.
                drop_until(position)
                resync_from = position
            if position - base >= len(buf) and not read_more():
                error = "truncated_gzip"
                break
            piece = bytes(buf[position - base : position - base + _PIECE])
            position += len(piece)
            try:
                out = inflater.decompress(piece)
            except zlib.error:
                error = "corrupt_gzip"
                break
            size += len(out)
            if error is None and size > max_bytes:
                error = "too_large"
                parts = [b"".join([*parts, out])[:_HEAD_KEEP]]  # keep only what names the record
            elif error is None:
                parts.append(out)
        if inflater.eof:
            position -= len(inflater.unused_data)
        if error == "truncated_gzip" and find_magic(resync_from) is not None:
            # A damaged member can inflate the members after it as its own deflate data, without a zlib error,
            # up to the end of the file: it did not end the file, so it is corrupt, and reading resumes there.
            error = "corrupt_gzip"
        data = b"".join(parts)
        if error == "corrupt_gzip" and offset >= base:  # (after too_large the start is already dropped)
            data = _salvage_head(bytes(buf[offset - base : position - base]))
        if error is None:
            yield Member(offset, data)
            drop_until(position)
            offset = position
            continue
        yield Member(offset, None, error, data[:_HEAD_KEEP])
        if error == "truncated_gzip":
            return
        if error == "too_large" and inflater.eof:
            drop_until(position)
            offset = position
            continue
        next_member = find_magic(resync_from)
        if next_member is None:
            return
        drop_until(next_member)
        offset = next_member


def _salvage_head(compressed: bytes) -> bytes:
    """What a damaged member decompresses to before the damage, fed in small steps so that the error
    comes after the good part was returned (enough to name the record's URL)."""
    inflater, out = zlib.decompressobj(31), []
    try:
        for start in range(0, len(compressed), 64):
            out.append(inflater.decompress(compressed[start : start + 64]))
            if sum(map(len, out)) >= _HEAD_KEEP or inflater.eof:
                break
    except zlib.error:
        pass
    return b"".join(out)[:_HEAD_KEEP]


def split_records(data: bytes) -> Iterator[tuple[bytes | None, str | None]]:
    """The WARC records in a member's bytes (one for Common Crawl), or (None, reason) for a bad one."""
    position = 0
    while position < len(data):
        if data[position:].strip() == b"":
            return
        header_end = data.find(b"\r\n\r\n", position)
        length = _CONTENT_LENGTH.search(data, position, header_end + 2) if header_end >= 0 else None
        if not data.startswith(b"WARC/", position) or length is None:
            yield None, "bad_record"
            return
        block_end = header_end + 4 + int(length.group(1))
        # A record ends with exactly CRLF CRLF after its block: anything else means the length is wrong.
        if data[block_end : block_end + 4] != b"\r\n\r\n":
            yield None, "bad_content_length"
            return
        yield data[position : block_end + 4], None
        position = block_end + 4


def target_uri(data: bytes) -> str:
    found = _TARGET_URI.search(data[:_HEAD_KEEP])
    return found.group(1).decode("utf-8", "replace").strip() if found else ""


class _Reject(Exception):
    def __init__(self, reason: str, url: str = ""):
        super().__init__(reason)
        self.reason, self.url = reason, url


def page_from_record(record_bytes: bytes, max_page_bytes: int) -> tuple[str, str] | None:
    """(page URL, HTML text) of a response record; None for records that are not responses (request,
    warcinfo, metadata). Raises _Reject for responses that hold no usable page."""
    from fastwarc.warc import WarcRecord

    url = target_uri(record_bytes)
    try:
        record = WarcRecord.from_bytes(record_bytes)
    except OSError:
        raise _Reject("bad_record", url) from None
    if record.headers.get("WARC-Type") != "response":
        return None
    try:
        record.parse_http(auto_decode="all")
        status = record.http_headers.status_code
        body = record.reader.read()
    except (OSError, ValueError, AttributeError):
        raise _Reject("bad_http", url) from None
    if status != 200:
        raise _Reject("http_status", url)
    content_type = record.http_content_type or record.headers.get("WARC-Identified-Payload-Type") or ""
    if content_type.split(";")[0].strip().lower() not in HTML_TYPES:
        raise _Reject("not_html", url)
    if len(body) > max_page_bytes:
        raise _Reject("too_large", url)
    text = decode_html(body, record.http_charset)
    if text is None:
        raise _Reject("bad_encoding", url)
    return url, text


def images_from_wat_record(record_bytes: bytes) -> tuple[str, list[tuple[str, str]]] | None:
    """(page URL, (image URL, caption) pairs) from a WAT metadata record, as MetaCLIP reads WAT links;
    None for metadata about requests and other non-response records."""
    url = target_uri(record_bytes)
    if b"\r\nWARC-Type: metadata" not in record_bytes[: record_bytes.find(b"\r\n\r\n") + 2]:
        return None
    block = record_bytes[record_bytes.find(b"\r\n\r\n") + 4 : -4]
    try:
        envelope = json.loads(block)["Envelope"]
        warc_headers = envelope.get("WARC-Header-Metadata", {})
        if warc_headers.get("WARC-Type") != "response":
            return None
        url = warc_headers.get("WARC-Target-URI", url)
        http = envelope["Payload-Metadata"].get("HTTP-Response-Metadata")
        if http is None:
            raise _Reject("not_html", url)
        status = str(http.get("Response-Message", {}).get("Status", "200"))
        html = http.get("HTML-Metadata")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise _Reject("bad_json", url) from None
    if status != "200":
        raise _Reject("http_status", url)
    if not isinstance(html, dict):
        raise _Reject("not_html", url)
    base = (html.get("Head") or {}).get("Base") if isinstance(html.get("Head"), dict) else None
    base = absolute_http_url(base, url) if isinstance(base, str) else None
    pairs, seen = [], set()
    for link in html.get("Links") or []:
        if not isinstance(link, dict) or not str(link.get("path", "")).startswith("IMG@/src"):
            continue
        image_url = absolute_http_url(link.get("url") if isinstance(link.get("url"), str) else None,
                                       base or url)
        if image_url is None:
            continue
        for name in TEXT_ATTRIBUTES:
            text = link.get(name)
            if isinstance(text, str) and text.strip() and (image_url, " ".join(text.split())) not in seen:
                seen.add((image_url, " ".join(text.split())))
                pairs.append((image_url, text))
    return url, pairs


def read_archive(path: str, stream, kind: str = "warc",
                 max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES) -> Iterator[tuple[str, dict]]:
    """("candidate", record) and ("reject", record) for one WARC (kind "warc") or WAT (kind "wat") stream."""

    def reject(url: str, reason: str, offset: int) -> tuple[str, dict]:
        return "reject", {"url": url, "caption": "", "stage": STAGE, "reason": reason,
                          "source": f"{kind}:{path}#{offset}"}

    for member in iter_gzip_members(stream, max_page_bytes + _HEADER_ROOM):
        if member.data is None:
            yield reject(target_uri(member.head), member.error, member.offset)
            continue
        for record_bytes, error in split_records(member.data):
            if record_bytes is None:
                yield reject(target_uri(member.data), error, member.offset)
                continue
            try:
                if kind == "wat":
                    found = images_from_wat_record(record_bytes)
                    if found is None:
                        continue
                    page_url, pairs = found
                else:
                    page = page_from_record(record_bytes, max_page_bytes)
                    if page is None:
                        continue
                    page_url, pairs = page[0], extract_images(page[1], page[0])
            except _Reject as bad:
                yield reject(bad.url, bad.reason, member.offset)
                continue
            source = f"{kind}:{path}#{member.offset}"
            for image_url, caption in pairs:
                yield "candidate", {"url": image_url, "caption": caption, "page_url": page_url, "source": source}


class _ReadArchiveFile(beam.DoFn):
    def __init__(self, kind: str, max_page_bytes: int):
        self.kind, self.max_page_bytes = kind, max_page_bytes
        self.files = Metrics.counter("read_" + kind, "files")
        self.candidates = Metrics.counter("read_" + kind, "candidates")
        self.rejects = Metrics.counter("read_" + kind, "rejects")

    def process(self, path: str):
        self.files.inc()
        try:
            stream = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        except Exception:
            self.rejects.inc()
            yield beam.pvalue.TaggedOutput("rejects", {"url": path, "caption": "", "stage": STAGE,
                                                       "reason": "unreadable_file", "source": f"{self.kind}:{path}"})
            return
        with stream:
            for tag, record in read_archive(path, stream, self.kind, self.max_page_bytes):
                if tag == "candidate":
                    self.candidates.inc()
                    yield record
                else:
                    self.rejects.inc()
                    Metrics.counter("read_" + self.kind, "rejected_" + record["reason"]).inc()
                    yield beam.pvalue.TaggedOutput("rejects", record)


class ReadWarc(beam.PTransform):
    """`p | ReadWarc(["gs://.../*.warc.gz"])` -> (candidates, rejects), one file per element, in parallel."""

    kind, option = "warc", "--warc"

    def __init__(self, patterns: list[str], max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES):
        super().__init__()
        self.patterns, self.max_page_bytes = list(patterns), max_page_bytes
        expand_patterns(self.patterns, self.option)  # fail now, naming the option, if nothing matches

    def expand(self, pbegin):
        from apache_beam.io import fileio

        outputs = (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll()
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            # Spread files over workers before the expensive read; a glob yields them all in one bundle.
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadArchiveFile(self.kind, self.max_page_bytes)).with_outputs(
                "rejects", main="candidates")
        )
        return outputs.candidates, outputs.rejects


class ReadWat(ReadWarc):
    """`p | ReadWat(["...wat.gz"])` -> (candidates, rejects): image links of Common Crawl's WAT metadata."""

    kind, option = "wat", "--wat"
