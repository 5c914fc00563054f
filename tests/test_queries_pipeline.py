"""End to end: the query list built by the Beam pipeline from small real-format inputs the tests write.

The expected list below is counted by hand from the fixture (see the comments next to each number).
"""

import bz2
import gzip
import json
import math
import os

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from queries import build_queries
from queries.load import load_queries
from queries.wiki_dump import ReadWikipedia

pytestmark = pytest.mark.timeout(300)

HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="10" case="first-letter">Template</namespace>
    </namespaces>
  </siteinfo>
"""
FOOTER = "</mediawiki>\n"


def page(title, ns, text, page_id, redirect=None):
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    redirect_tag = f'\n    <redirect title="{redirect}" />' if redirect else ""
    return f"""  <page>
    <title>{title}</title>
    <ns>{ns}</ns>
    <id>{page_id}</id>{redirect_tag}
    <revision>
      <id>{page_id}00</id>
      <timestamp>2024-06-01T00:00:00Z</timestamp>
      <contributor><username>Example</username><id>1</id></contributor>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="{len(text)}" xml:space="preserve">{escaped}</text>
      <sha1>abc</sha1>
    </revision>
  </page>
"""


# Visible text: "Hong Kong is a city in Asia." / "Hong Kong has a natural harbour." / "History" /
# "Visit the tourism board or Hong Kong Island."  -> 7 + 6 + 1 + 8 = 22 words.
HONG_KONG = """{{Short description|Special administrative region of China}}
{{Infobox settlement
| name = Hong Kong
| population = {{formatnum:7500000}}
}}
'''Hong Kong''' is a city in [[Asia]].<ref>{{cite web|title=Hong Kong facts}}</ref> Hong Kong has a [[harbour|natural harbour]].<ref name="b" />
<!-- hidden comment words -->
== History ==
{| class="wikitable"
! Year !! Event
|-
| 1841 || British rule
|}
[[File:Victoria Harbour.jpg|thumb|The [[harbour]] at night]]
Visit [https://www.discoverhongkong.com the tourism board] or Hong Kong Island.
[[Category:Cities in Asia]]
[[de:Hongkong]]"""

# Visible text: "Asia is a continent." / "Hong Kong is in Asia." / "Hong Kong" / "Tokyo" -> 4 + 5 + 2 + 1 = 12.
ASIA = """'''Asia''' is a continent&nbsp;. ''Hong Kong'' is in Asia.
* Hong Kong
* [[Tokyo]]"""

PAGES = [
    page("Hong Kong", 0, HONG_KONG, 1),
    page("Asia", 0, ASIA, 2),
    page("HK", 0, "#REDIRECT [[Hong Kong]]", 3, redirect="Hong Kong"),
    page("Talk:Hong Kong", 1, "Talk words talk words talk words", 4),
    page("Template:Infobox settlement", 10, "template words template words", 5),
]

# N = 34 tokens. Counts: Hong 5, Kong 5, is 3, a 3, Asia 3, in 2, every other word 1.
# Bigrams seen twice or more: Hong Kong 5, Kong is 2, is a 2, in Asia 2.
PMI = {"Hong Kong": math.log2(5 * 34 / (5 * 5)), "Kong is": math.log2(2 * 34 / (5 * 3)),
       "is a": math.log2(2 * 34 / (3 * 3)), "in Asia": math.log2(2 * 34 / (2 * 3))}

PAGEVIEWS_A = """en Hong_Kong 40 0
en Tokyo 69 0
en Talk:Hong_Kong 500 0
de Hong_Kong 1000 0
en.d Hong_Kong 1000 0
en Broken_line
en Star_Wars:_Episode_IV_–_A_New_Hope 100 0
"""
PAGEVIEWS_B = """en.m Hong_Kong 35 0
en Asia 70 0
en Asia abc 0
"""

LICENSE = """  1 This software and database is being provided to you, the LICENSEE, by  
  2 Princeton University under the following license.  By obtaining, using  
  3 and/or copying this software and database, you agree that you have  
  4 read, understood, and will comply with these terms and conditions.:  
"""
WORDNET = {
    "data.noun": LICENSE + "08860123 15 n 02 Hong_Kong 0 Xianggang 0 001 @i 08700255 n 0000 | a former British "
                           "colony on the southern coast of China\n"
                           "09208496 15 n 01 Asia 0 001 @i 09239740 n 0000 | the largest continent\n",
    "data.verb": LICENSE + "02604760 42 v 01 be 0 001 @ 02603699 v 0000 01 + 02 00 | have the quality of being\n",
    "data.adj": LICENSE + "00014490 00 s 01 galore(ip) 0 001 & 00013887 a 0000 | in great numbers\n",
    "data.adv": LICENSE + "00097768 02 r 01 up 0 000 | spatially or metaphorically from a lower to a higher "
                          "position\n",
}

# Best first: 3 sources (by uses = max(count, views)), then 1 source by uses, then by text.
EXPECTED = ["Hong Kong",  # bigram 5, title 40 + 35 = 75, wordnet
            "Asia",  # unigram 3, title 70, wordnet
            "Star Wars: Episode IV – A New Hope",  # title 100
            "Hong", "Kong",  # unigram 5
            "a", "is",  # unigram 3
            "in Asia", "is a",  # bigram 2
            "Xianggang", "be", "galore", "up"]  # wordnet only


def write_inputs(folder, dump_name="enwiki-pages-articles.xml.bz2"):
    dump = folder / dump_name
    dump.write_bytes(bz2.compress((HEADER + "".join(PAGES) + FOOTER).encode()))
    (folder / "pageviews-20240101-000000.gz").write_bytes(gzip.compress(PAGEVIEWS_A.encode()))
    (folder / "pageviews-20240102-000000.gz").write_bytes(gzip.compress(PAGEVIEWS_B.encode()))
    wordnet = folder / "dict"
    wordnet.mkdir()
    for name, text in WORDNET.items():
        (wordnet / name).write_text(text)
    return dump


def args(folder, out, *extra):
    return ["--wiki-dump", str(folder / "*.xml.bz2"), "--pageviews", str(folder / "pageviews-*.gz"),
            "--wordnet", str(folder / "dict"), "--output", str(out),
            "--min-unigram-count", "3", "--min-pmi", "2.5", "--min-bigram-count", "2", *extra]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    write_inputs(folder)
    out = folder / "out"
    assert build_queries.main(args(folder, out)) == 0
    return folder, out


def test_query_list_matches_hand_count(built):
    _, out = built
    assert (out / "queries.txt").read_text().splitlines() == EXPECTED
    rows = {row["query"]: row for row in pq.read_table(out / "queries.parquet").to_pylist()}
    assert rows["Hong Kong"]["sources"] == ["bigram", "title", "wordnet"]
    assert rows["Hong Kong"]["bigram_count"] == 5 and rows["Hong Kong"]["views"] == 75
    assert rows["Hong Kong"]["pmi"] == pytest.approx(PMI["Hong Kong"])
    assert rows["is a"]["pmi"] == pytest.approx(PMI["is a"])
    assert rows["in Asia"]["pmi"] == pytest.approx(PMI["in Asia"])
    assert "Kong is" not in rows  # count 2 but PMI 2.18 < 2.5
    assert rows["Asia"]["sources"] == ["unigram", "title", "wordnet"]
    assert rows["Asia"]["unigram_count"] == 3 and rows["Asia"]["views"] == 70
    assert rows["Hong"]["unigram_count"] == 5 and rows["Hong"]["views"] is None
    assert rows["galore"]["sources"] == ["wordnet"]


def test_markup_redirects_and_other_namespaces_do_not_count(built):
    _, out = built
    queries = set((out / "queries.txt").read_text().splitlines())
    # words only in templates, refs, comments, tables, file captions, talk/template pages or the redirect
    for hidden in ("Infobox", "facts", "hidden", "British", "night", "Talk", "talk", "template", "HK", "REDIRECT"):
        assert hidden not in queries
    summary = json.loads((out / "queries_summary.json").read_text())["counters"]
    assert summary["tokens_counted"] == 34
    assert summary["pages_articles"] == 2
    assert summary["pages_redirects_skipped"] == 1
    assert summary["pages_other_namespaces_skipped"] == 2


def test_bad_pageview_lines_are_counted_not_fatal(built):
    _, out = built
    summary = json.loads((out / "queries_summary.json").read_text())["counters"]
    assert summary["pageview_lines_rejected_fields"] == 1
    assert summary["pageview_lines_rejected_count"] == 1
    assert summary["pageview_titles_namespaced_skipped"] == 1
    assert summary["pageview_lines_skipped_project_de"] == summary["pageview_lines_skipped_project_en.d"] == 1
    by_project = json.loads((out / "queries_summary.json").read_text())["pageview_lines_skipped_by_project"]
    assert by_project == {"de": 1, "en.d": 1}
    assert "Tokyo" not in (out / "queries.txt").read_text().splitlines()  # 69 views < 70


def test_output_loads_as_a_query_list(built):
    _, out = built
    assert load_queries(str(out / "queries.parquet")) == EXPECTED
    assert load_queries(str(out / "queries.txt")) == EXPECTED


def test_cap_keeps_the_best_supported(built, tmp_path):
    folder, _ = built
    out = tmp_path / "capped"
    assert build_queries.main(args(folder, out, "--max-queries", "4")) == 0
    assert (out / "queries.txt").read_text().splitlines() == EXPECTED[:4]
    summary = json.loads((out / "queries_summary.json").read_text())["counters"]
    assert summary["entries_merged"] == len(EXPECTED) and summary["queries_written"] == 4


def _multistream(pages, pages_per_stream):
    """A multistream dump (header stream, page streams, footer in the last) and its index, as Wikimedia writes."""
    streams = [bz2.compress(HEADER.encode())]
    index_lines = []
    offset = len(streams[0])
    groups = [pages[i:i + pages_per_stream] for i in range(0, len(pages), pages_per_stream)]
    for number, group in enumerate(groups):
        text = "".join(group) + (FOOTER if number == len(groups) - 1 else "")
        index_lines += [f"{offset}:{number * 10 + k}:Title {k}" for k in range(len(group))]
        streams.append(bz2.compress(text.encode()))
        offset += len(streams[-1])
    return b"".join(streams), bz2.compress(("\n".join(index_lines) + "\n").encode())


def test_multistream_dump_split_by_its_index_gives_the_same_list(built, tmp_path):
    folder, built_out = built
    dump, index = _multistream(PAGES, pages_per_stream=2)
    (tmp_path / "enwiki-20240601-pages-articles-multistream.xml.bz2").write_bytes(dump)
    (tmp_path / "enwiki-20240601-pages-articles-multistream-index.txt.bz2").write_bytes(index)
    out = tmp_path / "out"
    argv = args(folder, out)
    argv[1] = str(tmp_path / "*multistream.xml.bz2")
    argv += ["--wiki-index", str(tmp_path / "*-index.txt.bz2")]
    assert build_queries.main(argv) == 0
    assert (out / "queries.txt").read_text() == (built_out / "queries.txt").read_text()


def test_multi_process_runner_spawns_workers_and_gives_the_same_list(built, tmp_path):
    folder, built_out = built
    multi = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    out = tmp_path / "out"
    assert build_queries.main(args(folder, out, "--runner=FnApiRunner", *multi)) == 0
    assert (out / "queries.txt").read_text() == (built_out / "queries.txt").read_text()
    # The reading step ran in worker processes, not in this one.
    pids_file = tmp_path / "pids"
    options = PipelineOptions(["--runner=FnApiRunner", *multi])
    with beam.Pipeline(options=options) as p:
        (p | ReadWikipedia([str(folder / "enwiki-pages-articles.xml.bz2")], [])
         | beam.Map(lambda _text: os.getpid()) | beam.Distinct()
         | beam.io.WriteToText(str(pids_file), shard_name_template=""))
    pids = {int(line) for line in pids_file.read_text().split()}
    assert pids and os.getpid() not in pids
