"""Query matching: which of the (up to 500k) queries occur in a caption.

Semantics are MetaCLIP's (`metaclip1/substr_matching.py`): the caption is padded with a space on each side,
the punctuation `, . ; : ? ! `` is spaced out, tabs and newlines become spaces, and an entry matches when
`" " + entry + " "` is a substring. Matching is case-sensitive, as there.

MetaCLIP loops over every entry per caption (500k substring tests); here one Aho-Corasick automaton
(pyahocorasick) finds all padded entries in a single pass over the caption, with identical results.
"""

from operator import itemgetter

import ahocorasick

_VALUE = itemgetter(1)  # (end index, stored value) -> value
_PUNCTS_TO_WRAP = [",", ".", ";", ":", "?", "!", "`"]
_CHARS_TO_SPACE = ["\t", "\n", "\r"]


def spacing(text: str) -> str:
    """MetaCLIP's padding of a caption before matching."""
    spaced = f" {text} "
    for punct in _PUNCTS_TO_WRAP:
        spaced = spaced.replace(punct, f" {punct} ")
    for char in _CHARS_TO_SPACE:
        spaced = spaced.replace(char, " ")
    return spaced


def naive_match(text: str, queries: list[str]) -> list[int]:
    """The reference: MetaCLIP's per-entry loop. Used by tests and the benchmark, too slow for 500k queries."""
    spaced = spacing(text)
    return [i for i, query in enumerate(queries) if f" {query} " in spaced]


class QueryMatcher:
    """Finds the ids of all queries in a caption. Build once per worker (DoFn.setup), then call `match`."""

    def __init__(self, queries: list[str]):
        # Entry text -> all its ids. A list with repeated entries (a hand-made one; load_queries drops
        # repeats) reports every id of a found entry, exactly as MetaCLIP's loop over the list does.
        ids_by_key: dict[str, list[int]] = {}
        for query_id, query in enumerate(queries):
            ids_by_key.setdefault(f" {query} ", []).append(query_id)
        self._automaton = ahocorasick.Automaton()
        for key, ids in ids_by_key.items():
            self._automaton.add_word(key, ids[0] if len(ids) == 1 else tuple(ids))
        self._has_repeats = len(ids_by_key) < len(queries)
        self._empty = not ids_by_key
        if not self._empty:
            self._automaton.make_automaton()

    def match(self, text: str) -> list[int]:
        """Sorted ids of the queries whose space-padded form occurs in the spaced caption."""
        if self._empty:
            return []
        # set(map(itemgetter)) stays in C; a comprehension over the match tuples costs ~30% more per caption.
        found = set(map(_VALUE, self._automaton.iter(spacing(text))))
        if self._has_repeats:
            found = {i for value in found for i in (value if isinstance(value, tuple) else (value,))}
        return sorted(found)
