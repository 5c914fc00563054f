"""QueryMatcher (a compiled word trie) returns exactly what MetaCLIP's naive per-entry loop returns."""

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.match import SMALL_QUERY_LIST, QueryMatcher, ShortListMatcher, make_matcher, naive_match, spacing

# A tiny alphabet makes overlaps, repeats and prefix/suffix relations between entries frequent; it mixes
# MetaCLIP's wrapped punctuation, whitespace it rewrites, other punctuation, accents (composed and combining),
# CJK, an emoji outside the BMP and a dotless i, whose case mapping changes length.
ALPHABET = "ab ,.;:?!`\t\n\r-'é\u0301日😀ı"
pieces = st.text(alphabet=ALPHABET, max_size=6)


@st.composite
def queries_and_text(draw):
    queries = draw(st.lists(pieces, max_size=12))
    # Entries that extend others (prefixes/suffixes) and exact repeats.
    for q in list(queries[:4]):
        queries.append(q + draw(pieces))
        queries.append(draw(pieces) + q)
    if queries and draw(st.booleans()):
        queries.append(draw(st.sampled_from(queries)))
    # The text is built from entries and noise, so that many entries really occur, back to back.
    parts = draw(st.lists(st.one_of(pieces, st.sampled_from(queries) if queries else pieces), max_size=10))
    separators = draw(st.lists(st.sampled_from(["", " ", ",", ". ", "\t", "\n", "!"]), min_size=len(parts),
                               max_size=len(parts)))
    text = "".join(p + s for p, s in zip(parts, separators))
    return queries, text


@settings(max_examples=600, deadline=None)
@given(queries_and_text())
def test_same_ids_as_naive_loop_on_adversarial_text(case):
    queries, text = case
    assert QueryMatcher(queries).match(text) == naive_match(text, queries)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=8), max_size=20), st.text(max_size=80))
def test_same_ids_as_naive_loop_on_random_unicode(queries, text):
    assert QueryMatcher(queries).match(text) == naive_match(text, queries)


def test_metaclip_padding_and_punctuation():
    matcher = QueryMatcher(["dog", "hot dog", "dog.", "cat", "Dog", "new york"])
    # Punctuation is spaced out, so "dog." in text still matches "dog"; an entry with punctuation never does.
    assert matcher.match("A hot dog. With cats") == [0, 1]
    assert matcher.match("Dog\tin\nNew York") == [4]  # case-sensitive, tabs/newlines are spaces
    assert matcher.match("new york,dog") == [0, 5]
    assert matcher.match("hotdog doggy") == []  # whole words only
    assert spacing("a,b") == " a , b "


def test_overlapping_entries_share_a_space():
    matcher = QueryMatcher(["a", "a a", "b"])
    # " a " occurs twice overlapping on the middle space; both entries are reported once.
    assert matcher.match("a a a") == [0, 1]


def test_repeated_entries_report_every_id_like_the_naive_loop():
    queries = ["red", "car", "red"]
    assert QueryMatcher(queries).match("a red car") == [0, 1, 2] == naive_match("a red car", queries)


def test_empty_query_list_matches_nothing_and_matcher_pickles():
    assert QueryMatcher([]).match("anything") == []
    matcher = pickle.loads(pickle.dumps(QueryMatcher(["sun", "sun set"])))
    assert matcher.match("sun set over the sea") == [0, 1]


@settings(max_examples=200, deadline=None)
@given(queries_and_text(), st.lists(st.text(alphabet=ALPHABET, max_size=40), max_size=8))
def test_a_batch_gives_each_caption_what_it_gets_alone(case, others):
    # Captions of different lengths in one call: buffers sized for the longest, ids kept apart per caption.
    queries, text = case
    texts = [*others, text, "", *others]
    assert QueryMatcher(queries).match_many(texts) == [naive_match(t, queries) for t in texts]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab c", min_size=12, max_size=40), max_size=12),
       st.lists(st.text(alphabet="ab", min_size=14, max_size=24), max_size=12))
def test_long_words_match_only_themselves(queries, words):
    # A table row keeps a word's first 16 bytes; these words are longer and mostly differ only further on.
    queries += [" ".join(words[:2]), words[0] if words else "x"]
    text = " ".join(words + queries[:3])
    assert QueryMatcher(queries).match(text) == naive_match(text, queries)


def test_multibyte_words_longer_than_a_table_row():
    matcher = QueryMatcher(["aaaaaaaaaaaaaaaaaaab", "日本語のテキスト", "日本語のテキスト 😀"])
    assert matcher.match("aaaaaaaaaaaaaaaaaaaa aaaaaaaaaaaaaaaaaaab.") == [0]
    assert matcher.match("aaaaaaaaaaaaaaaaaaab\u0301 日本語のテキスト\t😀") == [1, 2]
    assert matcher.match("日本語のテキストー") == []


@settings(max_examples=200, deadline=None)
@given(queries_and_text(), st.lists(st.text(alphabet=ALPHABET, max_size=40), max_size=8), st.integers(0, 12))
def test_short_list_matcher_gives_the_same_ids_before_and_after_its_switch_to_the_trie(case, others, switch):
    queries, text = case
    texts = [*others, text, "", *others]
    matcher = ShortListMatcher(queries, switch_after=switch)
    expected = [naive_match(t, queries) for t in texts]
    assert matcher.match_many(texts) == expected  # the loop (or the trie when switch is 0)
    assert matcher.match_many(texts) == expected  # the trie once `switch` captions have been seen
    assert [matcher.match(t) for t in texts] == expected


def test_make_matcher_uses_the_loop_for_short_lists_and_needs_no_numba_for_them():
    import subprocess
    import sys

    assert isinstance(make_matcher(["a"] * SMALL_QUERY_LIST), ShortListMatcher)
    assert isinstance(make_matcher(["a"] * (SMALL_QUERY_LIST + 1)), QueryMatcher)
    # A fresh interpreter: a short-list build matches its first captions without importing numba.
    probe = ("import sys; from pipeline.match import make_matcher; m = make_matcher(['hot dog', 'cat']); "
             "assert m.match_many(['a hot dog.', 'cats']) == [[0], []]; assert 'numba' not in sys.modules")
    subprocess.run([sys.executable, "-c", probe], check=True)
