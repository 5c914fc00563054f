"""Wiki markup -> the plain text a reader sees, for counting words (as WikiExtractor does for MetaCLIP).

Removed with their content: comments, <ref>s and other non-prose tags (math, gallery, ...), templates
{{...}} and tables {| ... |} (nested), file/image/category links and interlanguage links.
Kept as their visible text: [[target|label]] -> label, [[target]] -> target, [http://x label] -> label,
headings, bold/italic, list items, and the content of other HTML tags. Entities are decoded last.

Every step is a regular expression or one linear scan, so a page costs time proportional to its length, and
malformed markup (an unclosed template, a stray bracket) leaves text behind rather than failing. No pattern may
scan from each of many openers to the end of the page (an unclosed <ref>, a `<a` or `[http://` without its
closer): that is quadratic, and a large malformed page would stall a worker. So tag and link patterns stop at the
next opener, and closers of non-prose tags are searched once per tag (bench/bench_wikitext.py).
"""

import html
import re

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
# Tags whose content is not prose. <ref name="x"/> is self-closing; <ref>...</ref> holds a citation.
_NON_PROSE_OPEN = re.compile(
    r"<(ref|references|math|chem|ce|gallery|timeline|score|syntaxhighlight|source|pre|graph|mapframe|"
    r"templatedata|imagemap|hiero|code)\b([^<>]*)>", re.I)
# Openers and closers of templates and tables; table markup only counts at the start of a line.
_NESTING = re.compile(r"\{\{|\}\}|^[ \t]*\{\||^[ \t]*\|\}", re.M)
_INNER_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\[\]]*(?:[ \t]+([^\[\]\n]*))?\]", re.I)
_BARE_URL = re.compile(r"\bhttps?://[^\s<>\[\]{}|]*", re.I)
_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")
_BOLD_ITALIC = re.compile(r"'{2,}")
_HEADING = re.compile(r"^(=+)[^\n]*$", re.M)
_LIST_MARK = re.compile(r"^[*#:;]+[ \t]*", re.M)
_MAGIC_WORD = re.compile(r"__[A-Z]+__")

# Link prefixes whose target is not shown as text: media, categories, and links to other-language wikis.
_HIDDEN_LINK_PREFIXES = {"file", "image", "media", "category"}
_LANGUAGE_PREFIX = re.compile(r"^[a-z]{2,3}(?:-[a-z]{2,8})*$")
_MAX_LINK_PASSES = 6  # file captions hold links, links rarely nest deeper


def _remove_non_prose(text: str) -> str:
    """Drop every <tag .../> and <tag ...>...</tag> of the non-prose tags; an opener without its closer stays.

    The first closer after an opener ends it (as a lazy `.*?</tag>` would), but each tag's closers are searched
    once, left to right, instead of from every opener to the end of the page."""
    parts, kept_until, pos = [], 0, 0
    closers = {}  # tag -> its first closer at or after the last search, or None when there is none after it
    while (opener := _NON_PROSE_OPEN.search(text, pos)) is not None:
        end = opener.end()
        if not opener.group(2).endswith("/"):
            tag = opener.group(1).lower()
            closer = closers.get(tag, False)
            if closer is False or (closer is not None and closer.start() < end):
                closer = closers[tag] = re.compile(rf"</{tag}\s*>", re.I).search(text, end)
            if closer is None:
                pos = end
                continue
            end = closer.end()
        parts.append(text[kept_until:opener.start()])
        kept_until = pos = end
    parts.append(text[kept_until:])
    return "".join(parts)


def _heading_text(match: re.Match) -> str:
    """`== Title ==` -> `Title`: as many `=` on both sides (the most that fit), spaces around the title dropped.
    Counted, not matched with a backreference, which backtracks quadratically on a long line of `=`."""
    line = match.group(0)
    body = line.rstrip(" \t")
    k = min(len(match.group(1)), len(body) - len(body.rstrip("=")), len(body) // 2)
    return body[k:len(body) - k].strip(" \t") if k else line


def _remove_nested(text: str) -> str:
    """Drop every balanced {{...}} and {|...|} span, including spans nested in them.

    Unbalanced openers stay as text (MediaWiki shows them literally) and do not swallow the rest of the page.
    """
    open_at, spans = [], []
    for m in _NESTING.finditer(text):
        token = m.group().lstrip(" \t")
        if token in ("{{", "{|"):
            open_at.append(m.start())
        elif open_at:
            spans.append((open_at.pop(), m.end()))
    if not spans:
        return text
    spans.sort()
    parts, kept_until = [], 0
    for start, end in spans:
        if start >= kept_until:  # not inside a span already dropped
            parts.append(text[kept_until:start])
            kept_until = end
    parts.append(text[kept_until:])
    return "".join(parts)


def _link_text(match: re.Match) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    target = target.strip()
    shown_namespace = target.startswith(":")  # [[:Category:X]] is a visible link to the category page
    prefix = target.lstrip(":").partition(":")[0].strip().lower() if ":" in target.lstrip(":") else ""
    if not shown_namespace and (prefix in _HIDDEN_LINK_PREFIXES or _LANGUAGE_PREFIX.match(prefix)):
        return ""
    if label:
        return label.rsplit("|", 1)[-1] if "|" in label else label
    return target.lstrip(":")


def _replace_links(text: str) -> str:
    # Innermost links first, so a file link's caption links are resolved and the file link becomes innermost.
    for _ in range(_MAX_LINK_PASSES):
        text, replaced = _INNER_LINK.subn(_link_text, text)
        if not replaced:
            break
    return text


def strip_markup(wikitext: str) -> str:
    """The readable text of an article's wiki markup."""
    text = _COMMENT.sub("", wikitext)
    text = _remove_non_prose(text)
    text = _remove_nested(text)
    text = _replace_links(text)
    text = _EXTERNAL_LINK.sub(lambda m: m.group(1) or "", text)
    text = _BARE_URL.sub("", text)
    text = _TAG.sub("", text)
    text = _BOLD_ITALIC.sub("", text)
    text = _HEADING.sub(_heading_text, text)
    text = _LIST_MARK.sub("", text)
    text = _MAGIC_WORD.sub("", text)
    return html.unescape(text)
