"""Query matching: which of the (up to 500k) queries occur in a caption.

Semantics are MetaCLIP's (`metaclip1/substr_matching.py`): the caption is padded with a space on each side,
the punctuation `, . ; : ? ! `` is spaced out, tabs and newlines become spaces, and an entry matches when
`" " + entry + " "` is a substring. Matching is case-sensitive, as there.

MetaCLIP loops over every entry per caption (500k substring tests). Here the entries live in a trie over
*words*, walked from each word of the caption. That is exact, not an approximation: an occurrence of
`" entry "` in the spaced caption starts right after a space and ends right before one, so it is precisely a
run of consecutive space-separated words of the spaced caption equal to the entry's own words (empty words
included, for doubled spaces). tests/test_match.py checks it against the naive loop with hypothesis.

Why words and not characters: a character automaton of 500k padded entries (pyahocorasick) has ~4M nodes,
160 MB, and its walk takes a cache miss per character: ~80-110k captions/s per core. Over words, a step is
one hash probe per word, and the rows of frequent words stay in cache: ~3x faster (bench/bench_match.py,
bench/RESULTS.md). Words are compared as UTF-8 bytes (injective, and no multi-byte sequence contains a space
or ASCII punctuation); the walk is compiled with numba (pipeline/match_trie.py). A short query list is matched
by MetaCLIP's loop itself (`make_matcher`), which needs no compiled code.
"""

import numpy as np

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


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate (possible in a Python str) still maps to distinct bytes.
    return text.encode("utf-8", "surrogatepass")


def _trie():
    """The compiled kernels (pipeline/match_trie.py), imported on first use: numba loads with them."""
    from pipeline import match_trie

    return match_trie


def _table_size(n: int) -> int:
    """The smallest power of two that holds n rows at a load of at most 2/3 (linear probing stays short)."""
    return 1 << max(4, (3 * n // 2).bit_length())


class QueryMatcher:
    """Finds the ids of all queries in captions. Build once per worker (DoFn.setup), then call `match_many`
    on batches: `match`, one compiled call per caption, takes about twice as long per caption."""

    def __init__(self, queries: list[str]):
        trie = _trie()
        word_ids: dict[bytes, int] = {}
        children: dict[tuple[int, int], int] = {}  # (node, word id) -> child node; node 0 is the root
        ids_at: dict[int, list[int]] = {}  # node -> ids of the entries ending there (repeats share a node)
        for query_id, query in enumerate(queries):
            node = 0
            for word in _utf8(query).split(b" "):
                node = children.setdefault((node, word_ids.setdefault(word, len(word_ids))), len(children) + 1)
            ids_at.setdefault(node, []).append(query_id)

        # Entry ids grouped by node: node k's are out_ids[out_start[k]:out_start[k + 1]].
        n_nodes = len(children) + 1
        counts = np.zeros(n_nodes + 1, np.int64)
        for node, ids in ids_at.items():
            counts[node + 1] = len(ids)
        out_start = np.cumsum(counts)
        out_ids = np.zeros(len(queries), np.int32)
        for node, ids in ids_at.items():
            out_ids[out_start[node]:out_start[node + 1]] = ids

        parents = np.fromiter((parent for parent, _ in children), np.int64, len(children))
        word_of = np.fromiter((word for _, word in children), np.int64, len(children))
        nodes = np.fromiter(children.values(), np.int64, len(children))
        has_kids = np.zeros(n_nodes, np.int64)
        has_kids[parents] = 1
        described = np.stack([nodes, out_start[nodes], out_start[nodes + 1] * 2 + has_kids[nodes]], axis=1)
        at_root = parents == 0
        root_nodes = np.tile(np.array([trie._EMPTY, 0, 0], np.int64), (len(word_ids), 1))
        root_nodes[word_of[at_root]] = described[at_root]

        words = list(word_ids)
        word_bytes = np.frombuffer(b"".join(words), np.uint8)
        word_off = np.zeros(len(words) + 1, np.int64)
        np.cumsum([len(w) for w in words], out=word_off[1:])
        word_rows = np.full((_table_size(len(words)), trie.W_NODE + 3), trie._EMPTY, np.int64)
        pair_rows = np.full((_table_size(len(children)), trie.P_NODE + 3), trie._EMPTY, np.int64)
        deeper = ~at_root  # the root's children are in the word rows
        pair_keys = parents[deeper] * len(words) + word_of[deeper]
        trie._fill_tables(word_bytes, word_off, root_nodes, pair_keys, described[deeper], word_rows, pair_rows)
        self._tables = (word_rows, pair_rows, word_bytes, word_off, out_ids)  # _match_all's arguments after ends

    def match_many(self, texts: list[str]) -> list[list[int]]:
        """For each caption, the sorted ids of the queries whose space-padded form occurs in it, spaced."""
        encoded = [_utf8(text) for text in texts]
        data = np.frombuffer(b"".join(encoded), np.uint8)
        ends = np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)))
        ids, counts = _trie()._match_all(data, ends, *self._tables)
        flat, bounds = ids.tolist(), np.cumsum(counts).tolist()
        return [flat[lo:hi] for lo, hi in zip([0, *bounds], bounds)]

    def match(self, text: str) -> list[int]:
        """Sorted ids of the queries whose space-padded form occurs in the spaced caption."""
        data = np.frombuffer(_utf8(text), np.uint8)
        ids, _ = _trie()._match_all(data, np.array([len(data)]), *self._tables)
        return ids.tolist()


# A query list this short is matched by MetaCLIP's own loop until the worker has seen SWITCH_AFTER captions:
# ~2-8 us a caption against the trie's ~1 (bench/RESULTS.md, speed pass 5), but no numba to import and no
# compiled code to load (~0.6-0.9 s of a build's start-up). A small build (the demo, the experiment, tests, a
# sample run) never loads numba; a long one switches to the trie and has lost well under a second.
SMALL_QUERY_LIST = 64
SWITCH_AFTER = 100_000


class ShortListMatcher:
    """For a short query list: MetaCLIP's loop (naive_match) for the first SWITCH_AFTER captions, the compiled
    trie (QueryMatcher) after. The same ids either way, by definition of the semantics (tests/test_match.py)."""

    def __init__(self, queries: list[str], switch_after: int = SWITCH_AFTER):
        self._queries = list(queries)
        self._padded = [f" {query} " for query in queries]
        self._left = switch_after
        self._trie = None

    def match_many(self, texts: list[str]) -> list[list[int]]:
        if self._trie is None and self._left > 0:
            self._left -= len(texts)
            return [self._loop(text) for text in texts]
        if self._trie is None:
            self._trie = QueryMatcher(self._queries)
        return self._trie.match_many(texts)

    def match(self, text: str) -> list[int]:
        return self.match_many([text])[0]

    def _loop(self, text: str) -> list[int]:
        spaced = spacing(text)
        return [i for i, padded in enumerate(self._padded) if padded in spaced]


def make_matcher(queries: list[str]) -> "QueryMatcher | ShortListMatcher":
    """The matcher for a worker: the compiled trie, or for a short query list the loop that needs no numba."""
    return ShortListMatcher(queries) if len(queries) <= SMALL_QUERY_LIST else QueryMatcher(queries)
