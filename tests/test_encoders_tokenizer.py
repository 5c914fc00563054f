"""The tokenizer gives open_clip's token ids on any text, and train_tokenizer's merges load and round-trip."""

import gzip
import pickle
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import encoders
from encoders.tokenizer import MAX_MERGES, Tokenizer
from open_clip_compat import import_open_clip
from openwit.errors import InputError

# Pieces that exercise each cleaning step and each branch of the word pattern: HTML entities (double-escaped),
# mojibake for ftfy, odd whitespace, contractions, digits, the special tokens typed as text, emoji, combining marks.
ADVERSARIAL = [
    "&amp;amp;", "&lt;b&gt;", "&#39;", "&nbsp;", "Ã©", "â€™", "\u00a0", "\u2028", "\t\n\r", "  ", "'s", "'LL",
    "DON'T", "123", "４２", "<start_of_text>", "<end_of_text>", "<END_OF_TEXT>", "🐶🐱", "e\u0301", "ﬁ",
    "İ", "ß", "東京", "русский", "!!!?", "a.b.c", "\x00", "\ufeff", "\U0001f1fa\U0001f1f8",
]
texts = st.lists(st.one_of(st.text(max_size=20), st.sampled_from(ADVERSARIAL)), max_size=12).map("".join)


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    return import_open_clip().tokenizer.SimpleTokenizer()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(texts, min_size=1, max_size=3))
def test_token_ids_equal_open_clip(open_clip_tokenizer, batch):
    assert torch.equal(encoders.tokenize(batch), open_clip_tokenizer(batch))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["dog", "a", "photo", "東京", "&amp;", "12"]), min_size=70, max_size=120).map(" ".join),
       st.sampled_from([5, 16, 77]))
def test_truncation_keeps_the_end_token(open_clip_tokenizer, text, context_length):
    ids = encoders.tokenize([text], context_length=context_length)
    assert torch.equal(ids, open_clip_tokenizer([text], context_length=context_length))
    assert ids.shape == (1, context_length)
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407 and ids[0].argmax() == context_length - 1


def test_vocabulary_and_the_full_standard_file():
    # Our copy holds the head of OpenAI's file; the full 262k-line file that open_clip ships gives the same tokenizer.
    full = Path(import_open_clip().tokenizer.default_bpe())
    ours, theirs = Tokenizer(), Tokenizer(full)
    assert ours.vocab_size == theirs.vocab_size == 49408 == 512 + MAX_MERGES + 2
    assert (ours.sot_token, ours.eot_token) == (49406, 49407)
    assert ours.encoder == theirs.encoder
    assert ours.encode("A photo of a DOG!") == [320, 1125, 539, 320, 1929, 256]
    assert ours.decode(ours(["A photo of a &amp; DOG!"])[0]) == "a photo of a & dog !"


def test_pickles_small_for_dataloader_workers():
    tokenizer = Tokenizer()
    data = pickle.dumps(tokenizer)
    assert len(data) < 1000
    assert pickle.loads(data).encode("x-ray") == tokenizer.encode("x-ray")


def test_bad_merges_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="cannot read the BPE merges file"):
        Tokenizer(tmp_path / "missing.txt.gz")
    bad = tmp_path / "bad.txt"
    bad.write_text("#version: 0.2\na b\nnot-a-pair\n")
    with pytest.raises(InputError, match="line 3"):
        Tokenizer(bad)


CAPTIONS = [
    "a photo of a dog on the beach",
    "a black dog running on sand",
    "the cat sleeps on a red sofa",
    "Tokyo 東京 skyline at night",
    "a dog and a cat, best friends!",
] * 20


def test_train_tokenizer_roundtrip(tmp_path):
    path = encoders.train_tokenizer(CAPTIONS, 560, tmp_path / "merges.txt.gz")
    tokenizer = Tokenizer(path)
    assert tokenizer.vocab_size == 560 and tokenizer.eot_token == 559 and tokenizer.sot_token == 558
    assert gzip.open(path).read().decode().startswith("#version: 0.2")
    for caption in set(CAPTIONS):
        ids = tokenizer.encode(caption)
        assert tokenizer.decode(ids).replace(" ", "") == encoders.tokenizer.clean_text(caption).replace(" ", "")
    # Frequent words became single tokens; the first merge is the most frequent pair.
    assert len(tokenizer.encode("dog")) == 1
    # Deterministic: the same captions give the same file.
    again = encoders.train_tokenizer(CAPTIONS, 560, tmp_path / "again.txt.gz")
    assert Path(again).read_bytes() == Path(path).read_bytes()
    # A model sized by the trained vocabulary reads text at the end token (argmax), as with CLIP's.
    model = encoders.create("tiny-ViT", vocab_size=tokenizer.vocab_size).eval()
    with torch.no_grad():
        assert model.encode_text(tokenizer(CAPTIONS[:2])).shape == (2, 128)


def test_train_tokenizer_merges_equal_naive_bpe(tmp_path):
    # The incremental pair counting picks the same merges as recounting every pair from scratch each step.
    from collections import Counter

    from encoders.train_bpe import learn_merges
    from encoders.tokenizer import words

    counts = Counter(w for caption in CAPTIONS + ["hello hello world", "lower lowest newer newest"] for w in words(caption))
    fast = learn_merges(counts, 80)
    vocab = {w: list(w[:-1]) + [w[-1] + "</w>"] for w in counts}
    naive = []
    for _ in range(80):
        pairs = Counter()
        for w, symbols in vocab.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += counts[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        naive.append(best)
        for w, symbols in vocab.items():
            merged, i = [], 0
            while i < len(symbols):
                if symbols[i : i + 2] == list(best):
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            vocab[w] = merged
    assert fast == naive


def test_train_tokenizer_bad_input(tmp_path):
    with pytest.raises(InputError, match="too small"):
        encoders.train_tokenizer(CAPTIONS, 100, tmp_path / "m.txt")
    with pytest.raises(InputError, match="no captions"):
        encoders.train_tokenizer([], 1000, tmp_path / "m.txt")


def test_train_tokenizer_runs_out_of_pairs(tmp_path):
    # Fewer distinct pairs than asked for: a smaller vocabulary, which the Tokenizer reports.
    path = encoders.train_tokenizer(["ab ab"], 1000, tmp_path / "m.txt")
    assert Tokenizer(path).vocab_size == 514 + 1
