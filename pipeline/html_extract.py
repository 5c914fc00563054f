"""Image-text pairs from one HTML page: the pure core shared by the WARC source and the page crawler.

For every `<img>` it takes one image URL and every text MetaCLIP reads for it (`alt`, `title`,
`data-image-title`, see MetaCLIP's `cc_matching.py`), plus the `<figcaption>` of the `<figure>` holding it.
Each distinct (image URL, text) pair of the page is one candidate; the caption stays raw (captions.py cleans).

The image URL: `src` when it is a fetchable URL; otherwise the lazy-loading attributes pages use
(`data-src`, ...); otherwise the largest candidate of `srcset`. It is resolved against `<base href>` and the
page URL, its fragment dropped; anything that is not http(s) (data:, javascript:, blob:) is skipped.
"""

import codecs
import re
from urllib.parse import urljoin, urlsplit, urlunsplit

from selectolax.lexbor import LexborHTMLParser

TEXT_ATTRIBUTES = ("alt", "title", "data-image-title")
# Where lazy-loading scripts keep the real image while `src` holds a placeholder.
LAZY_SRC_ATTRIBUTES = ("data-src", "data-lazy-src", "data-original", "data-lazy", "data-url")
HTML_TYPES = ("text/html", "application/xhtml+xml")
_META_CHARSET = re.compile(rb"<meta[^>]{0,200}?charset=[\"']?([\w\-:.]{1,40})", re.IGNORECASE)
MAX_URL_CHARS = 2048  # browsers and CDNs refuse longer URLs; such values are junk, not images


def decode_html(body: bytes, declared: str | None) -> str | None:
    """The page as text, or None when its bytes are not text in any charset it can be in."""
    sniffed = _META_CHARSET.search(body[:4096])
    candidates = [declared, sniffed.group(1).decode("ascii", "replace") if sniffed else None, "utf-8"]
    if not declared and not sniffed:
        candidates.append("windows-1252")  # what browsers assume for an undeclared page (HTML5)
    names = []
    for name in filter(None, candidates):
        try:
            names.append(codecs.lookup(name).name)
        except LookupError:  # a charset name Python does not know, e.g. "x-user-defined"
            continue
    if body.count(b"\x00") > len(body) // 100 and not any(n.startswith("utf-16") for n in names):
        return None  # binary content served as HTML
    for name in names:
        try:
            return body.decode(name)
        except (UnicodeDecodeError, ValueError):
            continue
    # A few stray bytes in a real page are common; a page of them is not text.
    text = body.decode(names[0], "replace")
    return text if text.count("\ufffd") <= len(text) // 100 else None


def absolute_http_url(value: str | None, base: str) -> str | None:
    """`value` resolved against `base`, fragment dropped; None unless it is an http(s) URL with a host."""
    if not value:
        return None
    value = value.strip()
    if not value or value.startswith(("data:", "javascript:", "blob:", "#")) or len(value) > MAX_URL_CHARS:
        return None
    # Most image URLs are absolute or root-relative; resolving those by hand is 5x faster than urljoin
    # (URL handling was most of the WARC read time) and gives the same result, which a test checks.
    if not _NEEDS_URLJOIN.search(value):
        url = None
        if value.startswith(("http://", "https://")):
            url = _with_path(value.split("#", 1)[0])
        elif value.startswith("//") and base.startswith(("http://", "https://")):
            url = _with_path(base[: base.index(":") + 1] + value.split("#", 1)[0])
        elif value.startswith("/") and base.startswith(("http://", "https://")):
            origin = _with_path(base.split("#", 1)[0].split("?", 1)[0])
            if origin is not None:
                url = origin[: origin.index("/", origin.index("//") + 2)] + value.split("#", 1)[0]
        if url is not None:
            return url[:-1] if url.find("?") == len(url) - 1 else url  # urlunsplit drops an empty query
    return _resolve_with_urljoin(value, base)


# Cases the fast path leaves to urljoin/urlsplit: dot segments, characters urlsplit strips or rejects, IPv6
# hosts, backslashes, and anything not plainly http(s).
_NEEDS_URLJOIN = re.compile(r"/\.|^\.|[\t\r\n\\\[\]]")


def _with_path(url: str) -> str | None:
    """An absolute http(s) URL without fragment, with "/" as path when it has none; None without a host."""
    start = url.index("//") + 2
    end = len(url)
    for sep in "/?":
        found = url.find(sep, start)
        if found >= 0:
            end = min(end, found)
    if end == start:
        return None
    if end == len(url) or url[end] == "?":
        return url[:end] + "/" + url[end:]
    return url


def _resolve_with_urljoin(value: str, base: str) -> str | None:
    try:
        parts = urlsplit(urljoin(base, value))
    except ValueError:  # e.g. an invalid IPv6 literal in the host
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))


def best_srcset_candidate(srcset: str) -> str | None:
    """The URL of the largest rendition in a `srcset` ("a.jpg 480w, b.jpg 1080w" -> "b.jpg").

    Width (`w`) and density (`x`) descriptors each rank their own kind; a candidate without a descriptor
    counts as 1x. The largest rendition is the best image to train on; the downloader resizes it anyway.
    """
    best, best_rank = None, None
    for item in srcset.split(","):
        fields = item.split()
        if not fields:
            continue
        url, descriptor = fields[0], (fields[1].lower() if len(fields) > 1 else "1x")
        try:
            size = float(descriptor[:-1])
        except ValueError:
            continue
        rank = (descriptor.endswith("w"), size)  # widths describe renditions better than densities
        if best_rank is None or rank > best_rank:
            best, best_rank = url, rank
    return best


def _image_url(node, base: str) -> str | None:
    attrs = node.attributes
    url = absolute_http_url(attrs.get("src"), base)
    if url:
        return url
    for name in LAZY_SRC_ATTRIBUTES:
        url = absolute_http_url(attrs.get(name), base)
        if url:
            return url
    for name in ("srcset", "data-srcset"):
        if attrs.get(name):
            url = absolute_http_url(best_srcset_candidate(attrs[name]), base)
            if url:
                return url
    return None


def _figcaption(node) -> str | None:
    """Text of the figcaption of the nearest enclosing <figure>, if any."""
    parent = node.parent
    while parent is not None and parent.tag not in ("figure", "body", "html"):
        parent = parent.parent
    if parent is None or parent.tag != "figure":
        return None
    caption = parent.css_first("figcaption")
    # Text nodes joined with spaces so "<p>one</p><p>two</p>" does not become "onetwo"; then collapsed.
    return " ".join(caption.text(separator=" ").split()) if caption is not None else None


def extract_images(html: str | bytes, page_url: str) -> list[tuple[str, str]]:
    """(absolute image URL, raw caption) pairs of a page, in page order, without repeats."""
    tree = LexborHTMLParser(html)
    base = page_url
    base_node = tree.css_first("base[href]")
    if base_node is not None:
        base = absolute_http_url(base_node.attributes.get("href"), page_url) or page_url

    has_figures = tree.css_first("figure") is not None  # skip the walk up the tree on pages without figures
    pairs, seen = [], set()
    for node in tree.css("img"):
        url = _image_url(node, base)
        if url is None:
            continue
        texts = [node.attributes.get(name) for name in TEXT_ATTRIBUTES]
        if has_figures:
            texts.append(_figcaption(node))
        for text in texts:
            if not text or not text.strip():
                continue
            key = (url, " ".join(text.split()))
            if key not in seen:
                seen.add(key)
                pairs.append((url, text))
    return pairs
