"""Splitting Wikipedia text into words, the way MetaCLIP builds its n-gram counts.

MetaCLIP's `metadata/build_ngram.py` (`simple_tokenizer` + `count_ngrams`) splits on whitespace and makes every
punctuation character a token of its own; punctuation tokens are not counted and break bigrams. So a text is a
list of punctuation-free *segments*, each a run of whitespace-separated words, and bigrams are adjacent words
inside one segment: "New York-based, 1990" -> segments ["New York", "based", " 1990"] -> words
New, York, based, 1990 and the bigram (New, York). Line breaks end segments too (see _BREAK).

Case is kept: the matcher (pipeline/match.py) is case-sensitive, as MetaCLIP's is. Beyond MetaCLIP's set
(ASCII punctuation plus CJK full-width marks and the em dash) we also split on the en dash and ellipsis, which
Wikipedia uses in ranges ("1990–1995") and quotes, so those do not glue numbers into one token.
"""

import re
import string

_EXTRA_PUNCTUATION = "，。、；：？¿！“”‘’（）【】《》〈〉「」『』～—–…"
PUNCTUATION = string.punctuation + _EXTRA_PUNCTUATION
# A line break also ends a segment: in wiki text it separates headings, list items and paragraphs, so a pair
# across it ("History" + "Visit") is not a phrase. (MetaCLIP's tokenizer treats it as plain whitespace.)
_BREAK = re.compile("[" + re.escape(PUNCTUATION) + r"\n]+")


def segments(text: str) -> list[list[str]]:
    """The words of `text`, grouped in runs that no punctuation interrupts."""
    return [words for words in (part.split() for part in _BREAK.split(text)) if words]


def words(text: str) -> list[str]:
    return [word for part in _BREAK.split(text) for word in part.split()]


def is_punctuation_only(text: str) -> bool:
    return all(ch in PUNCTUATION or ch.isspace() for ch in text)
