"""CLIP's byte-level BPE tokenizer, giving the same token ids as OpenAI's and open_clip's.

Text is cleaned (ftfy, HTML entities unescaped twice, whitespace collapsed, lower case), split into words by
CLIP's regular expression, each word's UTF-8 bytes mapped to printable characters and merged by the ranked BPE
merges; a word's last symbol carries the end-of-word mark `</w>`. Rows are `<start_of_text> ids <end_of_text>`,
zero-padded to the context length; a longer text is cut and its last id replaced by `<end_of_text>`, because the
text tower reads its feature at that token.

The merges file is OpenAI's format: a header line, then one merge ("a b") per line, most frequent first.
`bpe_clip_49408.txt.gz` beside this file holds the 48,894 merges CLIP uses, the head of OpenAI's
`bpe_simple_vocab_16e6.txt.gz` (MIT licence, see LICENSE-bpe); that full file loads too.
Derived from OpenAI's CLIP tokenizer (MIT licence, Copyright (c) 2021 OpenAI).
"""

import gzip
import html
from functools import lru_cache
from pathlib import Path

import ftfy
import regex

from openwit.errors import InputError

DEFAULT_BPE = str(Path(__file__).with_name("bpe_clip_49408.txt.gz"))
CONTEXT_LENGTH = 77
# CLIP's vocabulary: 256 byte symbols, the same 256 ending a word, 48,894 merges, 2 special tokens = 49,408.
MAX_MERGES = 49152 - 256 - 2
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
END_OF_WORD = "</w>"


@lru_cache()
def bytes_to_unicode():
    """A reversible map of the 256 byte values to printable characters, so merges never see whitespace or
    control characters: printable Latin-1 bytes map to themselves, the others to chr(256 + n)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def clean_text(text):
    """CLIP's cleaning: fix mojibake, unescape HTML (twice: captions are often double-escaped), collapse
    whitespace, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


# Words: the special tokens, English contractions, runs of letters, single digits, runs of other non-spaces.
WORD_PATTERN = regex.compile(
    "|".join(SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def words(text):
    """The cleaned text's words, each as its bytes mapped by bytes_to_unicode (what BPE merges operate on)."""
    byte_encoder = bytes_to_unicode()
    return ["".join(byte_encoder[b] for b in word.encode("utf-8")) for word in WORD_PATTERN.findall(clean_text(text))]


def read_merges(bpe_path):
    """The merges of an OpenAI-format merges file (gzip or plain text): a header line, then "a b" per line."""
    path = Path(bpe_path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{bpe_path}: cannot read the BPE merges file ({e.strerror}); give the path of a "
                         "bpe_simple_vocab_16e6.txt.gz or of a file written by encoders.train_tokenizer") from e
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    lines = raw.decode("utf-8").split("\n")[1:]
    merges = []
    for number, line in enumerate(lines[:MAX_MERGES], start=2):
        if not line:
            continue
        pair = tuple(line.split())
        if len(pair) != 2:
            raise InputError(f"{bpe_path}, line {number}: expected a merge 'a b', got {line!r}")
        merges.append(pair)
    return merges



def merge_pair(symbols: list[str], first: str, second: str) -> list[str]:
    """`symbols` with every (non-overlapping, left to right) `first second` pair merged into one symbol."""
    merged, i = [], 0
    while i < len(symbols):
        if i < len(symbols) - 1 and symbols[i] == first and symbols[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged

class Tokenizer:
    """BPE tokenizer: `encode(text) -> list[int]`, `tokenizer(texts) -> LongTensor [n, context_length]`."""

    def __init__(self, bpe_path=None, context_length=CONTEXT_LENGTH):
        self.bpe_path = bpe_path or DEFAULT_BPE
        self.context_length = context_length
        merges = read_merges(self.bpe_path)
        symbols = list(bytes_to_unicode().values())
        vocab = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
        self.bpe_ranks = {merge: rank for rank, merge in enumerate(merges)}
        # The special tokens come last, so the end-of-text id is the largest: the text tower finds it by argmax.
        self.sot_token = self.encoder[SPECIAL_TOKENS[0]]
        self.eot_token = self.encoder[SPECIAL_TOKENS[1]]
        self.vocab_size = len(vocab)
        self.cache = {t: t for t in SPECIAL_TOKENS}

    def __getstate__(self):
        # DataLoader workers receive a pickled tokenizer: send the path, not the tables (rebuilt in __setstate__).
        return {"bpe_path": self.bpe_path, "context_length": self.context_length}

    def __setstate__(self, state):
        self.__init__(**state)

    def bpe(self, word):
        """The space-separated BPE symbols of one byte-mapped word (memoised: caption words repeat a lot)."""
        cached = self.cache.get(word)
        if cached is not None:
            return cached
        parts = list(word[:-1]) + [word[-1] + END_OF_WORD]
        ranks = self.bpe_ranks
        while len(parts) > 1:
            # Apply the best-ranked merge present, to all its (non-overlapping, left to right) occurrences.
            best, best_rank = None, None
            for pair in zip(parts, parts[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            parts = merge_pair(parts, *best)
        result = " ".join(parts)
        if len(self.cache) < 1_000_000:
            self.cache[word] = result
        return result

    def encode(self, text):
        encoder = self.encoder
        return [encoder[symbol] for word in words(text) for symbol in self.bpe(word).split(" ")]

    def decode(self, ids):
        """The text of a row of ids (cleaned, as the model saw it), up to its end-of-text token."""
        symbols = []
        for i in map(int, ids):
            if i == self.eot_token:
                break
            if i != self.sot_token:
                symbols.append(self.decoder[i])
        text = "".join(symbols)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace(
            END_OF_WORD, " ").strip()

    def __call__(self, texts, context_length=None):
        import torch

        if isinstance(texts, str):
            texts = [texts]
        context_length = context_length or self.context_length
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token] + self.encode(text) + [self.eot_token]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot_token
            result[row, : len(ids)] = torch.tensor(ids)
        return result


@lru_cache()
def default_tokenizer():
    return Tokenizer()


def tokenize(texts, context_length=CONTEXT_LENGTH):
    """CLIP's tokenize: a LongTensor [len(texts), context_length] of ids with the standard vocabulary."""
    return default_tokenizer()(texts, context_length=context_length)
