"""Reading articles out of Wikipedia XML dumps (MediaWiki export format), streamed page by page.

A dump is never held in memory: an XMLPullParser is fed 1 MiB of decompressed bytes at a time, each <page>
is handed on when it closes, and the tree is cleared behind it. Only articles are kept: namespace 0, not a
redirect. What is skipped is counted (Beam counters `queries:pages_*`).

Splitting: a file is one unit of work. A multistream dump (`*-multistream.xml.bz2`) given with its index
(`*-multistream-index.txt.bz2`, lines `offset:page_id:title`) is cut instead into byte ranges of whole bz2
streams (100 pages each), so one large file spreads over many workers. Each range is decompressed on its own
and parsed inside a synthetic <mediawiki> root, since a stream holds bare <page> elements.
"""

import bz2
import posixpath
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from openwit.errors import InputError
from queries.files import CHUNK_BYTES, file_size, open_raw, read_chunks, read_lines

WHAT = "Wikipedia dump"
STREAMS_PER_RANGE = 200  # ~20,000 pages, a few MB of bz2: big enough to amortise, small enough to balance


@dataclass(frozen=True)
class Page:
    title: str
    namespace: int | None
    is_redirect: bool
    text: str | None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]  # export files put every element in the MediaWiki export namespace


def _page_from_element(page: ET.Element) -> Page:
    title, namespace, is_redirect, text = "", None, False, None
    for child in page:
        name = _local(child.tag)
        if name == "title":
            title = child.text or ""
        elif name == "ns":
            try:
                namespace = int(child.text or "")
            except ValueError:
                namespace = None
        elif name == "redirect":
            is_redirect = True
        elif name == "revision":  # full-history dumps have several; the last one is the current text
            for field in child:
                if _local(field.tag) == "text":
                    text = field.text
    if text is not None and text.lstrip()[:9].upper() == "#REDIRECT":
        is_redirect = True  # old dumps mark redirects only in the text
    return Page(title, namespace, is_redirect, text)


def parse_pages(chunks, where: str, synthetic_root: bool = False):
    """Yield every Page in the XML fed by `chunks` (bytes). `where` names the input in error messages."""
    parser = ET.XMLPullParser(events=("start", "end"))
    if synthetic_root:
        parser.feed(b"<mediawiki>")
    root, root_closed = None, False

    def pages():
        nonlocal root, root_closed
        for event, element in parser.read_events():
            if event == "start":
                if root is None:
                    root = element
                    if _local(element.tag) != "mediawiki":
                        raise InputError(
                            f"{where} is not a MediaWiki XML export: its root element is <{_local(element.tag)}>, "
                            "expected <mediawiki>; give the pages-articles dump (*.xml.bz2)")
            elif element is root:
                root_closed = True
            elif _local(element.tag) == "page":
                yield _page_from_element(element)
                root.clear()  # drop the finished page (and siteinfo) so memory stays flat

    try:
        for chunk in chunks:
            parser.feed(chunk)
            yield from pages()
        if synthetic_root and not root_closed:  # the last stream of a file closes </mediawiki> itself
            parser.feed(b"</mediawiki>")
        parser.close()
        yield from pages()
    except ET.ParseError as e:
        line, column = e.position
        problem = str(e).rsplit(": line ", 1)[0]  # the position is given once, below
        raise InputError(f"{where} is not well-formed XML at line {line}, column {column}: {problem}. "
                         "Give an uncorrupted MediaWiki XML export.") from e
    if root is None:
        raise InputError(f"{where} is empty; give a MediaWiki XML export")


def read_range_chunks(path: str, start: int, end: int):
    """Decompressed bytes of the whole bz2 streams stored in bytes [start, end) of `path`."""
    where = f"{WHAT} {path!r} bytes {start}-{end}"
    with open_raw(path) as raw:
        raw.seek(start)
        remaining = end - start
        decompressor, fed = bz2.BZ2Decompressor(), False
        while remaining > 0:
            data = raw.read(min(CHUNK_BYTES, remaining))
            if not data:
                raise InputError(f"{where}: the file ends at byte {end - remaining}; it is truncated "
                                 "(or the index belongs to a different dump)")
            remaining -= len(data)
            while data:
                try:
                    out = decompressor.decompress(data)
                except OSError as e:
                    raise InputError(f"{where}: not a bz2 stream ({e}); the multistream index does not match "
                                     "this dump, give the index published with it") from e
                fed = True
                if out:
                    yield out
                if decompressor.eof:  # one stream done; the next begins in the leftover bytes
                    data = decompressor.unused_data
                    decompressor, fed = bz2.BZ2Decompressor(), False
                else:
                    data = b""
        if fed:
            raise InputError(f"{where}: the last bz2 stream is cut off; the file is truncated, download it again")


def stream_ranges(index_path: str, dump_size: int, streams_per_range: int = STREAMS_PER_RANGE):
    """Yield (start, end) byte ranges covering the dump's page streams, from its multistream index.

    A stream's offset repeats on the index lines of its 100 pages; an unreadable line only merges two ranges,
    so it is counted, not fatal. The first stream (before the first offset) holds <siteinfo> only.
    """
    bad_lines = Metrics.counter("queries", "index_lines_rejected")
    offsets_in_range, start, previous = 0, None, -1
    for number, line in read_lines(index_path, "multistream index"):
        head = line.split(b":", 1)[0]
        if not head.isdigit():
            if line.strip():
                bad_lines.inc()
            continue
        offset = int(head)
        if offset == previous:
            continue
        if offset < previous or offset >= dump_size:
            raise InputError(
                f"multistream index {index_path!r} line {number}: offset {offset} is out of order or beyond the "
                f"dump's {dump_size} bytes; give the index published with this dump")
        previous = offset
        if start is None:
            start = offset
        elif offsets_in_range == streams_per_range:
            yield start, offset
            start, offsets_in_range = offset, 0
        offsets_in_range += 1
    if start is None:
        raise InputError(f"multistream index {index_path!r} has no `offset:page_id:title` line")
    yield start, dump_size


def dump_for_index(index_path: str, dump_paths: list[str]) -> str:
    """The dump a multistream index belongs to, by Wikimedia's naming: X-index.txt.bz2 -> X.xml.bz2."""
    name = posixpath.basename(index_path)
    wanted = name.replace("-index", "", 1).replace(".txt", ".xml", 1)
    for path in dump_paths:
        if posixpath.basename(path) == wanted:
            return path
    raise InputError(f"--wiki-index {index_path!r}: no --wiki-dump named {wanted!r} to go with it; "
                     "give the multistream dump the index was published with")


def check_dump_start(path: str) -> None:
    """Fail fast, before any worker starts, on a dump that is not a MediaWiki export at all."""
    first = b""
    for chunk in read_chunks(path, WHAT):
        first = chunk[:4096]
        break
    head = first.lstrip().lstrip(b"\xef\xbb\xbf")
    if head.startswith(b"<?xml"):
        head = head[head.find(b"?>") + 2:].lstrip()
    if not head.startswith(b"<mediawiki"):
        preview = first[:60].decode("utf-8", "replace")
        raise InputError(f"{WHAT} {path!r} is not a MediaWiki XML export (it starts with {preview!r}, expected "
                         "<mediawiki ...>); give the pages-articles dump (*.xml or *.xml.bz2)")


class ReadArticles(beam.DoFn):
    """(path, start, end) -> the wiki text of each article in it; (path, None, None) reads the whole file."""

    def __init__(self):
        self.articles = Metrics.counter("queries", "pages_articles")
        self.redirects = Metrics.counter("queries", "pages_redirects_skipped")
        self.other_namespaces = Metrics.counter("queries", "pages_other_namespaces_skipped")
        self.without_text = Metrics.counter("queries", "pages_rejected_without_text")

    def process(self, work):
        path, start, end = work
        if start is None:
            pages = parse_pages(read_chunks(path, WHAT), f"{WHAT} {path!r}")
        else:
            pages = parse_pages(read_range_chunks(path, start, end), f"{WHAT} {path!r} bytes {start}-{end}",
                                synthetic_root=True)
        for page in pages:
            if page.namespace != 0:
                self.other_namespaces.inc()
            elif page.is_redirect:
                self.redirects.inc()
            elif page.text is None:
                self.without_text.inc()
            else:
                self.articles.inc()
                yield page.text


class ReadWikipedia(beam.PTransform):
    """Dump paths (+ multistream indexes) -> article wiki texts, the work spread over workers."""

    def __init__(self, dump_paths: list[str], index_paths: list[str], streams_per_range: int = STREAMS_PER_RANGE):
        super().__init__()
        self.dump_paths = dump_paths
        self.index_paths = index_paths
        self.streams_per_range = streams_per_range

    def expand(self, pbegin):
        indexed = {dump_for_index(index, self.dump_paths): index for index in self.index_paths}
        whole_files = [(path, None, None) for path in self.dump_paths if path not in indexed]
        work = pbegin | "DumpFiles" >> beam.Create(whole_files)
        if indexed:
            per_range = self.streams_per_range
            ranges = (
                pbegin
                | "IndexedDumps" >> beam.Create(sorted(indexed.items()))
                | "StreamRanges" >> beam.FlatMap(
                    lambda pair: ((pair[0], start, end)
                                  for start, end in stream_ranges(pair[1], file_size(pair[0]), per_range)))
            )
            work = (work, ranges) | "AllWork" >> beam.Flatten()
        return (
            work
            | "SpreadWork" >> beam.Reshuffle()
            | "ReadArticles" >> beam.ParDo(ReadArticles())
        )
