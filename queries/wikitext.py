"""Wiki markup -> the plain text a reader sees, for counting words (as WikiExtractor does for MetaCLIP).

Removed with their content: comments, <ref>s and other non-prose tags (math, gallery, ...), templates
{{...}} and tables {| ... |} (nested), file/image/category links and interlanguage links.
Kept as their visible text: [[target|label]] -> label, [[target]] -> target, [http://x label] -> label,
headings, bold/italic, list items, and the content of other HTML tags. Entities are decoded last.

Every step is a regular expression or one linear scan, so a page costs time proportional to its length, and
malformed markup (an unclosed template, a stray bracket) leaves text behind rather than failing.
"""

import html
import re

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
# Tags whose content is not prose. <ref name="x"/> is self-closing; <ref>...</ref> holds a citation.
_NON_PROSE = re.compile(
    r"<(ref|references|math|chem|ce|gallery|timeline|score|syntaxhighlight|source|pre|graph|mapframe|"
    r"templatedata|imagemap|hiero|code)\b[^>]*?(?:/>|>.*?</\1\s*>)", re.S | re.I)
# Openers and closers of templates and tables; table markup only counts at the start of a line.
_NESTING = re.compile(r"\{\{|\}\}|^[ \t]*\{\||^[ \t]*\|\}", re.M)
_INNER_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]*(?:[ \t]+([^\]]*))?\]", re.I)
_BARE_URL = re.compile(r"\bhttps?://[^\s<>\[\]{}|]*", re.I)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_BOLD_ITALIC = re.compile(r"'{2,}")
_HEADING = re.compile(r"^(=+)[ \t]*(.*?)[ \t]*\1[ \t]*$", re.M)
_LIST_MARK = re.compile(r"^[*#:;]+[ \t]*", re.M)
_MAGIC_WORD = re.compile(r"__[A-Z]+__")

# Link prefixes whose target is not shown as text: media, categories, and links to other-language wikis.
_HIDDEN_LINK_PREFIXES = {"file", "image", "media", "category"}
_LANGUAGE_PREFIX = re.compile(r"^[a-z]{2,3}(?:-[a-z]{2,8})*$")
_MAX_LINK_PASSES = 6  # file captions hold links, links rarely nest deeper


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
    text = _NON_PROSE.sub("", text)
    text = _remove_nested(text)
    text = _replace_links(text)
    text = _EXTERNAL_LINK.sub(lambda m: m.group(1) or "", text)
    text = _BARE_URL.sub("", text)
    text = _TAG.sub("", text)
    text = _BOLD_ITALIC.sub("", text)
    text = _HEADING.sub(r"\2", text)
    text = _LIST_MARK.sub("", text)
    text = _MAGIC_WORD.sub("", text)
    return html.unescape(text)
