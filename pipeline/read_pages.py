"""Candidates from a list of page URLs: crawl each page with the project's fetcher, then extract as from WARC.

The list is text, one URL per line (blank lines and `#` comments skipped), on any Beam filesystem. Pages are
grouped by host before crawling, so every page of a host is fetched by one Fetcher in one worker and its
politeness limits (robots.txt, per-host concurrency and delay, 429 back-off) hold without coordination.

`crawl_pages` is the asyncio core (URLs in, candidates and rejects out); `ReadPages` is the Beam source.
"""

import asyncio
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from openwit.files import expand_patterns, text_lines
from openwit.hashing import stable_hash64
from pipeline.fetch import FetchOptions, Fetcher
from pipeline.html_extract import HTML_TYPES, decode_html, extract_images

STAGE = "read"
REASONS = {
    "bad_url": "the line is not an absolute http(s) URL",
    "not_html": "the page's Content-Type is not HTML",
    "bad_encoding": "the page does not decode in its declared charset, UTF-8 or windows-1252",
}  # plus every reason of pipeline.fetch.REASONS (dns_error, http_404, robots_disallowed, ...)
HOST_GROUPS = 4096  # hosts are spread over this many groups; one group is crawled by one Fetcher
_BATCH = 256  # pages in flight per group at most (the Fetcher bounds concurrency further)


def _charset(content_type: str | None) -> str | None:
    for field in (content_type or "").split(";")[1:]:
        name, _, value = field.strip().partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip("\"'") or None
    return None


def page_candidates(page_url: str, result) -> tuple[list[dict], dict | None]:
    """Candidates of one fetched page, or ([], reject) when it failed or is not a usable HTML page."""

    def reject(reason: str) -> tuple[list[dict], dict]:
        return [], {"url": page_url, "caption": "", "stage": STAGE, "reason": reason, "source": f"page:{page_url}"}

    if result.reason is not None:
        return reject(result.reason)
    content_type = (result.content_type or "").split(";")[0].strip().lower()
    if content_type and content_type not in HTML_TYPES:
        return reject("not_html")
    text = decode_html(result.body, _charset(result.content_type))
    if text is None:
        return reject("bad_encoding")
    base = result.final_url or page_url  # relative image URLs resolve against where the page really is
    return [
        {"url": url, "caption": caption, "page_url": base, "source": f"page:{page_url}"}
        for url, caption in extract_images(text, base)
    ], None


async def crawl_pages(urls: list[str], options: FetchOptions, batch: int = _BATCH) -> list[tuple[list[dict], dict | None]]:
    """page_candidates for each URL, in order, all fetched with one Fetcher (robots.txt read once per host).
    Pages go in batches so that at most `batch` bodies are held at once; each is reduced to its candidates."""
    out = []
    async with Fetcher(options) as fetcher:
        for start in range(0, len(urls), batch):
            chunk = urls[start : start + batch]
            results = await asyncio.gather(*(fetcher.fetch_page(url) for url in chunk))
            out.extend(page_candidates(url, result) for url, result in zip(chunk, results))
    return out


def read_url_list(path: str):
    """(line number, URL or None when the line is not a URL) for each non-blank, non-comment line."""
    with FileSystems.open(path) as f:
        for number, line in enumerate(text_lines(f), start=1):
            url = line.strip()
            if not url or url.startswith("#"):
                continue
            parts = urlsplit(url) if " " not in url else None
            ok = parts is not None and parts.scheme in ("http", "https") and parts.netloc
            yield number, url if ok else None, url


class _ReadList(beam.DoFn):
    def process(self, path: str):
        for number, url, line in read_url_list(path):
            if url is None:
                yield beam.pvalue.TaggedOutput("rejects", {
                    "url": line, "caption": "", "stage": STAGE, "reason": "bad_url", "source": f"pages:{path}:{number}"})
            else:
                yield stable_hash64(urlsplit(url).hostname or "") % HOST_GROUPS, url


class _CrawlGroup(beam.DoFn):
    """Crawls the pages of one host group with one Fetcher (one asyncio loop per group)."""

    def __init__(self, options: FetchOptions):
        self.options = options
        self.pages = Metrics.counter("read_pages", "pages")
        self.candidates = Metrics.counter("read_pages", "candidates")
        self.rejects = Metrics.counter("read_pages", "rejects")

    def process(self, element):
        _group, urls = element
        urls = sorted(set(urls))  # deterministic order; a page listed twice is crawled once
        for candidates, reject in asyncio.run(crawl_pages(urls, self.options)):
            self.pages.inc()
            if reject is not None:
                self.rejects.inc()
                yield beam.pvalue.TaggedOutput("rejects", reject)
            self.candidates.inc(len(candidates))
            yield from candidates


class ReadPages(beam.PTransform):
    """`p | ReadPages(["pages.txt"], FetchOptions())` -> (candidates, rejects)."""

    def __init__(self, paths: list[str], options: FetchOptions = FetchOptions()):
        super().__init__()
        self.paths, self.options = list(paths), options
        expand_patterns(self.paths, "--page-urls")  # fail now, naming the option, if a list is missing

    def expand(self, pbegin):
        listed = (
            pbegin
            | "Lists" >> beam.Create(self.paths)
            | "ReadLists" >> beam.ParDo(_ReadList()).with_outputs("rejects", main="urls")
        )
        crawled = (
            listed.urls
            | "ByHost" >> beam.GroupByKey()
            | "Crawl" >> beam.ParDo(_CrawlGroup(self.options)).with_outputs("rejects", main="candidates")
        )
        rejects = (listed.rejects, crawled.rejects) | "Rejects" >> beam.Flatten()
        return crawled.candidates, rejects
