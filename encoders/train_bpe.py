"""Learn a CLIP-style BPE vocabulary from captions, for small models trained from scratch on a built dataset.

Words come from the tokenizer's own cleaning and word pattern, as byte-mapped strings whose last symbol carries
the end-of-word mark, so the learnt merges apply exactly as CLIP's do. Standard BPE: repeatedly merge the most
frequent adjacent pair of symbols (ties broken by the pair itself, so the result is deterministic), counting
pairs incrementally: a merge only revisits the words that contain the pair.
"""

import gzip
import heapq
from collections import Counter, defaultdict
from pathlib import Path

from encoders.tokenizer import END_OF_WORD, SPECIAL_TOKENS, merge_pair, words
from openwit.errors import InputError

# 256 byte symbols + the same 256 ending a word + the 2 special tokens: the vocabulary before any merge.
BASE_VOCAB = 2 * 256 + len(SPECIAL_TOKENS)


def learn_merges(word_counts, num_merges):
    """The BPE merges (pairs of symbols), most frequent first, for a Counter of byte-mapped words."""
    vocab = [list(word[:-1]) + [word[-1] + END_OF_WORD] for word in word_counts]
    freqs = list(word_counts.values())
    pair_counts = Counter()
    pair_words = defaultdict(set)  # pair -> ids of the words holding it
    for word_id, symbols in enumerate(vocab):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += freqs[word_id]
            pair_words[pair].add(word_id)
    # Max-heap by count, with stale entries skipped when popped (a count that no longer matches).
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < num_merges and heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative_count or negative_count == 0:
            continue
        merges.append(pair)
        first, second = pair
        changed = set()
        for word_id in pair_words.pop(pair):
            symbols, freq = vocab[word_id], freqs[word_id]
            for old in zip(symbols, symbols[1:]):
                pair_counts[old] -= freq
                changed.add(old)
            merged = merge_pair(symbols, first, second)
            vocab[word_id] = merged
            for new in zip(merged, merged[1:]):
                pair_counts[new] += freq
                pair_words[new].add(word_id)
                changed.add(new)
        pair_counts.pop(pair, None)
        for other in changed - {pair}:
            count = pair_counts[other]
            if count > 0:
                heapq.heappush(heap, (-count, other))
            else:
                # Gone from every word. (A set may also keep ids of words that lost the pair while others still
                # hold it; revisiting such a word subtracts and re-adds the same pairs, a no-op.)
                pair_counts.pop(other, None)
                pair_words.pop(other, None)
    return merges


def train_tokenizer(captions, vocab_size, out_path):
    """Learn merges for `vocab_size` tokens from an iterable of captions and write them to out_path (gzip when
    it ends in .gz) in OpenAI's format, loadable by `encoders.Tokenizer(out_path)`. Returns out_path.

    When the captions hold fewer distinct pairs than asked for, the vocabulary is smaller: size the model by
    `Tokenizer(out_path).vocab_size`.
    """
    if vocab_size < BASE_VOCAB + 1:
        raise InputError(f"vocab_size {vocab_size} is too small: the byte symbols and special tokens alone take "
                         f"{BASE_VOCAB}; ask for more (CLIP uses 49408)")
    word_counts = Counter()
    for caption in captions:
        word_counts.update(w for w in words(caption) if w not in SPECIAL_TOKENS)
    if not word_counts:
        raise InputError("no captions to learn a vocabulary from: give the captions of a built dataset")
    merges = learn_merges(word_counts, vocab_size - BASE_VOCAB)
    text = f"#version: 0.2 (openwit train_tokenizer, {BASE_VOCAB + len(merges)} tokens)\n"
    text += "".join(f"{a} {b}\n" for a, b in merges)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    if out_path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    out_path.write_bytes(data)
    return str(out_path)
