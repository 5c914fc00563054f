"""The compiled half of the query matcher (pipeline/match.py): the word trie's hash tables and their walk, in
numba. A module of its own so that numba (its import and its cache load: ~0.6-0.9 s of a build's start-up) is
loaded only by a build whose query list is long enough to need it (match.make_matcher).
"""

import numba
import numpy as np

_EMPTY = -1

# Table rows are int64, one cache line or less each, so that a lookup is one memory access where it can be.
# A word's row: its hash, id, byte length, its first 16 bytes (compared in place; longer words are checked
# against the word list), then the trie node it leads to from the root. A pair's row: the key (node, word id),
# then the node it leads to. A node is described by three numbers: its id, the range of its entry ids in
# out_ids, and whether any longer entry continues from it (else the walk stops without a probe).
W_HASH, W_ID, W_LEN, W_HEAD, W_HEAD2, W_NODE = 0, 1, 2, 3, 4, 5  # W_NODE.. W_NODE+2: the node
P_KEY, P_NODE = 0, 1  # P_NODE.. P_NODE+2: the node
INLINE_BYTES = 16


@numba.njit(inline="always")
def _word_key(data, start, end):
    """In one pass over data[start:end]: its FNV-1a hash, folded so that the low bits (the table slot)
    depend on every byte, and its first 16 bytes as two little-endian int64s (zeros past the end)."""
    h = np.uint64(14695981039346656037)
    head, head2 = np.int64(0), np.int64(0)
    for i in range(start, end):
        b = data[i]
        h = (h ^ np.uint64(b)) * np.uint64(1099511628211)
        k = i - start
        if k < 8:
            head |= np.int64(b) << np.int64(8 * k)
        elif k < 16:
            head2 |= np.int64(b) << np.int64(8 * (k - 8))
    return np.int64(h ^ (h >> np.uint64(29))), head, head2


@numba.njit(inline="always")
def _pair_slot(key, mask):
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)) & mask


@numba.njit(nogil=True, cache=True)
def _fill_tables(word_bytes, word_off, root_nodes, pair_keys, pair_nodes, words, pairs):
    """Open-addressing tables with linear probing: word bytes -> row, (node, word id) -> row."""
    mask = len(words) - 1
    for tid in range(len(word_off) - 1):
        lo, hi = word_off[tid], word_off[tid + 1]
        h, head, head2 = _word_key(word_bytes, lo, hi)
        slot = h & mask
        while words[slot, W_ID] != _EMPTY:
            slot = (slot + 1) & mask
        words[slot, W_HASH] = h
        words[slot, W_ID] = tid
        words[slot, W_LEN] = hi - lo
        words[slot, W_HEAD] = head
        words[slot, W_HEAD2] = head2
        words[slot, W_NODE:W_NODE + 3] = root_nodes[tid]
    mask = len(pairs) - 1
    for i in range(len(pair_keys)):
        slot = _pair_slot(pair_keys[i], mask)
        while pairs[slot, P_KEY] != _EMPTY:
            slot = (slot + 1) & mask
        pairs[slot, P_KEY] = pair_keys[i]
        pairs[slot, P_NODE:P_NODE + 3] = pair_nodes[i]


@numba.njit(inline="always")
def _word_row(data, start, end, words, word_bytes, word_off):
    """The table row of the word data[start:end], or -1 if no entry contains it."""
    h, head, head2 = _word_key(data, start, end)
    length = end - start
    mask = len(words) - 1
    slot = h & mask
    while True:
        tid = words[slot, W_ID]
        if tid == _EMPTY:
            return _EMPTY
        if words[slot, W_HASH] == h and words[slot, W_LEN] == length and words[slot, W_HEAD] == head \
                and words[slot, W_HEAD2] == head2:
            same = True
            lo = word_off[tid]
            for i in range(INLINE_BYTES, length):
                if word_bytes[lo + i] != data[start + i]:
                    same = False
                    break
            if same:
                return slot
        slot = (slot + 1) & mask


@numba.njit(inline="always")
def _pair_row(node, tid, n_words, pairs):
    key = node * n_words + tid
    mask = len(pairs) - 1
    slot = _pair_slot(key, mask)
    while True:
        if pairs[slot, P_KEY] == key:
            return slot
        if pairs[slot, P_KEY] == _EMPTY:
            return _EMPTY
        slot = (slot + 1) & mask


@numba.njit(nogil=True, cache=True)
def _match_all(data, ends, words, pairs, word_bytes, word_off, out_ids):
    """Match every caption of data (UTF-8, caption c ends at ends[c]); return (ids, counts per caption).

    Per caption: split it into the words of its spaced form, look each word up, then from every word walk
    the trie as far as the following words allow, collecting the ids of the entries passed."""
    n_words = len(word_off) - 1
    counts = np.zeros(len(ends), np.int64)
    ids = np.empty(max(64, 8 * len(ends)), np.int32)
    n_ids = 0
    longest = 0
    start = 0
    for c in range(len(ends)):
        longest = max(longest, ends[c] - start)
        start = ends[c]
    rows = np.empty(2 * longest + 1, np.int64)  # a caption has at most 2 words per byte, plus one
    found = np.empty(64, np.int32)
    start = 0
    for c in range(len(ends)):
        # The words of the spaced caption, read off the caption itself: a space, tab or newline ends a word;
        # punctuation that MetaCLIP wraps in spaces ends a word and is a word of its own. Each word is a run of
        # the caption's bytes, so nothing is copied.
        n = 0
        word_start = start
        for i in range(start, ends[c]):
            b = data[i]
            if b == 32 or b == 9 or b == 10 or b == 13:
                rows[n] = _word_row(data, word_start, i, words, word_bytes, word_off)
                n += 1
                word_start = i + 1
            elif b == 44 or b == 46 or b == 59 or b == 58 or b == 63 or b == 33 or b == 96:  # , . ; : ? ! `
                rows[n] = _word_row(data, word_start, i, words, word_bytes, word_off)
                rows[n + 1] = _word_row(data, i, i + 1, words, word_bytes, word_off)
                n += 2
                word_start = i + 1
        rows[n] = _word_row(data, word_start, ends[c], words, word_bytes, word_off)
        n += 1
        start = ends[c]
        n_found = 0
        for i in range(n):
            if rows[i] == _EMPTY:
                continue
            node, lo, hi_kids = words[rows[i], W_NODE], words[rows[i], W_NODE + 1], words[rows[i], W_NODE + 2]
            j = i + 1
            while node != _EMPTY:
                hi, kids = hi_kids >> 1, hi_kids & 1
                if n_found + hi - lo > len(found):
                    bigger = np.empty(2 * (n_found + hi - lo), np.int32)
                    bigger[:n_found] = found[:n_found]
                    found = bigger
                for k in range(lo, hi):
                    found[n_found] = out_ids[k]
                    n_found += 1
                if j == n or kids == 0 or rows[j] == _EMPTY:
                    break
                row = _pair_row(node, words[rows[j], W_ID], n_words, pairs)
                if row == _EMPTY:
                    break
                node, lo, hi_kids = pairs[row, P_NODE], pairs[row, P_NODE + 1], pairs[row, P_NODE + 2]
                j += 1
        # Sorted, without repeats (an entry can occur twice in a caption); lists are short: insertion sort.
        for i in range(1, n_found):
            value = found[i]
            k = i - 1
            while k >= 0 and found[k] > value:
                found[k + 1] = found[k]
                k -= 1
            found[k + 1] = value
        if n_ids + n_found > len(ids):
            bigger = np.empty(2 * (n_ids + n_found), np.int32)
            bigger[:n_ids] = ids[:n_ids]
            ids = bigger
        before = n_ids
        for i in range(n_found):
            if i == 0 or found[i] != found[i - 1]:
                ids[n_ids] = found[i]
                n_ids += 1
        counts[c] = n_ids - before
    return ids[:n_ids], counts
