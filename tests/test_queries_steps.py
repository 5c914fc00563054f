"""The query builder's steps on their own: markup, words, PMI, page-view lines, WordNet lines, ranking, splits."""

import bz2
import json
import math
from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from queries import ngrams, pageviews, wordnet
from queries.load import load_queries
from queries.merge import merge_entry, normalize_query, rank_key
from queries.ngrams import ScoreBigrams, count_text, pmi
from queries.tokens import segments
from queries.wiki_dump import parse_pages, read_range_chunks, stream_ranges
from queries.wikitext import strip_markup


def test_strip_markup_keeps_what_a_reader_sees():
    text = strip_markup(
        "{{Infobox|a={{nested|b}}}}'''Paris''' is the [[capital city|capital]] of [[France]]."
        "<ref name=x>Source words</ref><ref name=y/> See [http://example.org the site] &amp; "
        "[[File:Eiffel.jpg|thumb|The [[Eiffel Tower]]]].\n== Name ==\n* [[Category:Cities]]Lutetia<br/>"
        "<!-- note -->\n{|\n| cell\n|}\n[[fr:Paris]]__NOTOC__")
    assert segments(text) == [["Paris", "is", "the", "capital", "of", "France"], ["See", "the", "site"],
                              ["Name"], ["Lutetia"]]


def test_unbalanced_template_does_not_swallow_the_page():
    assert "after" in strip_markup("{{broken template\nText after. {{ok}} more")


def test_tokens_split_on_punctuation_and_keep_case():
    assert segments("New York-based, 1990–1995 (U.S.)") == [["New", "York"], ["based"], ["1990"], ["1995"],
                                                              ["U"], ["S"]]


def test_count_text_counts_words_and_pairs_within_segments():
    unigrams, bigrams = Counter(), Counter()
    assert count_text("a b a. b a", unigrams, bigrams) == 5
    assert unigrams == {"a": 3, "b": 2}
    assert bigrams == {("a", "b"): 1, ("b", "a"): 2}


def test_pmi_is_nltk_log2_with_corpus_size():
    # NLTK: log2(n_ii * n_xxx) - log2(n_ix * n_xi); 10 pairs among 1000 tokens of words seen 20 and 50 times.
    assert pmi(10, 20, 50, 1000) == pytest.approx(math.log2(10 * 1000 / (20 * 50)))
    assert pmi(1, 1, 1, 2**30) == pytest.approx(30.0)  # MetaCLIP's cut: a unique pair in a 2^30-token corpus


@settings(max_examples=8, deadline=None)
@given(st.lists(st.lists(st.sampled_from("a b c d e f g h".split()), min_size=1, max_size=12), min_size=1,
                max_size=12), st.floats(min_value=0.0, max_value=4.0), st.integers(min_value=1, max_value=3))
def test_score_bigrams_equals_brute_force(monkeypatch_module, texts, min_pmi, min_count):
    unigrams, bigrams = Counter(), Counter()
    for words in texts:
        count_text(" ".join(words), unigrams, bigrams)
    total = sum(unigrams.values())
    expected = [(f"{a} {b}", n, pmi(n, unigrams[a], unigrams[b], total)) for (a, b), n in bigrams.items()
                if n >= min_count and pmi(n, unigrams[a], unigrams[b], total) >= min_pmi]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        uni = p | "U" >> beam.Create(list(unigrams.items()))
        tot = p | "T" >> beam.Create([total])
        scored = (p | "B" >> beam.Create(list(bigrams.items()))
                  | ScoreBigrams(uni, tot, min_pmi, min_count)
                  | beam.MapTuple(lambda q, n, score: (q, n, round(score, 9))))
        assert_that(scored, equal_to([(q, n, round(s, 9)) for q, n, s in expected]))


@pytest.fixture(scope="module")
def monkeypatch_module():
    # Prune every word that cannot reach min_pmi, however rare, so the pruning path is exercised.
    patch = pytest.MonkeyPatch()
    patch.setattr(ngrams, "HOT_WORD_COUNT", 0)
    yield patch
    patch.undo()


def test_pageview_lines():
    assert pageviews.parse_line(b"en Albert_Einstein 1234 0") == ("en", "Albert_Einstein", 1234)
    assert pageviews.parse_line(b"en Albert_Einstein") == "fields"
    assert pageviews.parse_line(b"en Albert_Einstein -3 0") == "count"
    assert pageviews.parse_line(b"en \xff\xfe 3 0") == "encoding"
    assert pageviews.normalize_title("Star_Wars:_Episode_IV") == "Star Wars: Episode IV"
    assert pageviews.is_namespaced("Talk:Paris") and pageviews.is_namespaced("file:X.jpg")
    assert pageviews.is_namespaced("Wikipedia talk:Help")
    assert not pageviews.is_namespaced("Star Wars: Episode IV") and not pageviews.is_namespaced("Paris")


def test_wordnet_line_lemmas():
    line = "00014490 00 s 02 galore(ip) 0 in_great_numbers 0 001 & 00013887 a 0000 | in great numbers"
    assert wordnet.parse_data_line(line) == ["galore", "in great numbers"]
    with pytest.raises(ValueError):
        wordnet.parse_data_line("00014490 00 s 05 galore 0 | too few words")


def test_merge_and_rank_rule():
    assert normalize_query("  New \t York ") == "New York"
    assert normalize_query("?!") is None and normalize_query("x" * 257) is None
    entry = merge_entry("Paris", [("title", 900), ("unigram", 50), ("wordnet", None)])
    assert entry["sources"] == ["unigram", "title", "wordnet"] and entry["views"] == 900
    ranked = sorted([entry, merge_entry("Rome", [("title", 5000)]), merge_entry("Lyon", [("title", 5000)]),
                     merge_entry("zebra", [("wordnet", None)]), merge_entry("Nice", [("unigram", 10),
                                                                                      ("title", 20)])],
                    key=rank_key)
    assert [e["query"] for e in ranked] == ["Paris", "Nice", "Lyon", "Rome", "zebra"]


def _multistream(pages_per_stream, n_pages):
    header = b'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/">\n<siteinfo/>\n'
    streams, index, offset = [bz2.compress(header)], [], None
    offset = len(streams[0])
    groups = [list(range(i, min(i + pages_per_stream, n_pages))) for i in range(0, n_pages, pages_per_stream)]
    for g, group in enumerate(groups):
        xml = "".join(f"<page><title>T{i}</title><ns>0</ns><revision><text>word{i}</text></revision></page>\n"
                      for i in group) + ("</mediawiki>\n" if g == len(groups) - 1 else "")
        index += [f"{offset}:{i}:T{i}" for i in group]
        streams.append(bz2.compress(xml.encode()))
        offset += len(streams[-1])
    return b"".join(streams), "\n".join(index) + "\nnot an index line\n"


def test_multistream_ranges_cover_every_page_once(tmp_path):
    dump, index = _multistream(pages_per_stream=3, n_pages=10)
    (tmp_path / "d.xml.bz2").write_bytes(dump)
    (tmp_path / "i.txt").write_text(index)
    ranges = list(stream_ranges(str(tmp_path / "i.txt"), len(dump), streams_per_range=1))
    assert len(ranges) == 4 and ranges[-1][1] == len(dump)
    titles = [p.title for start, end in ranges
              for p in parse_pages(read_range_chunks(str(tmp_path / "d.xml.bz2"), start, end), "t",
                                   synthetic_root=True)]
    assert titles == [f"T{i}" for i in range(10)]


def test_load_queries_reads_metaclip_metadata_json(tmp_path):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(["cat", "New York", "cat", " "]))
    assert load_queries(str(path)) == ["cat", "New York"]
