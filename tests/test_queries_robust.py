"""Query builder on hostile inputs (issue 16, item 9): markup stripping stays linear on malformed pages, and
page-view lines of other projects are counted per project and named."""

import gzip
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queries import build_queries
from queries.wikitext import strip_markup

pytestmark = pytest.mark.timeout(300)

# Openers without closers, closers without openers, and the pieces in between: what a broken page is made of.
TOKENS = ["<ref>", "<ref name=a", "<ref/>", "</ref>", "<math>", "</math", "<a ", "<b>", ">", "{{", "}}", "{|",
          "|}", "[[", "]]", "[[File:x|", "|", "[http://x.example ", "[//y ", "]", "<!--", "-->", "==", "=", " ",
          "\n", "'''", "*", "__TOC__", "__AB", "&amp;", "&", "word", "Ünï"]
ADVERSARIAL = ["<ref>x ", "<ref name=a ", "<a b ", "[http://x y ", "=", "= ", "[[a|", "{{a ", "<!-- x ",
               "__AB", "'''x", "*#:;", "}}|}]]", "<ref>a</ref", "<math>[[", "== a [http://b "]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=60), st.integers(1, 40))
def test_strip_markup_takes_any_markup(tokens, repeat):
    page = "".join(tokens) * repeat
    text = strip_markup(page)
    assert isinstance(text, str) and len(text) <= len(page)
    inside = page.replace("</ref", "").replace("<!--", "")  # (an open comment would hide the closer)
    assert "<ref" not in strip_markup("a <ref name=x>" + inside + "</ref> b")  # a closed citation goes whole


def test_closed_non_prose_tags_still_go_and_unclosed_ones_stay():
    assert strip_markup("a<ref>cite</ref>b<REF name=x/>c<math>x^2</math >d") == "abcd"
    assert strip_markup("a <ref>never closed") == "a <ref>never closed".replace("<ref>", "")  # tag text goes
    assert strip_markup("== Title ==\n=== Sub ==\n====") == "Title\n= Sub\n"


@pytest.mark.parametrize("unit", ADVERSARIAL)
def test_a_large_malformed_page_takes_linear_time(unit):
    page = unit * (300_000 // len(unit))  # the quadratic version took minutes on most of these
    started = time.perf_counter()
    strip_markup(page)
    assert time.perf_counter() - started < 3.0  # ~0.1 s here; loose for 2 shared cores


def test_pageview_lines_of_other_projects_are_counted_and_named(tmp_path, capsys):
    views = tmp_path / "pageviews-20240101-000000.gz"
    views.write_bytes(gzip.compress(b"en Hong_Kong 500 0\nen.wikipedia Asia 90 0\nen.wikipedia Paris 90 0\n"
                                    b"de Paris 80 0\n"))
    assert build_queries.main(["--pageviews", str(views), "--output", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "queries_summary.json").read_text())
    assert summary["pageview_lines_skipped_by_project"] == {"en.wikipedia": 2, "de": 1}
    assert "en.wikipedia 2, de 1" in capsys.readouterr().out  # named in what the user reads, not only the JSON


def test_pageview_file_of_only_other_projects_names_them_not_the_thresholds(tmp_path, capsys):
    views = tmp_path / "pageviews-20240101-000000.gz"
    views.write_bytes(gzip.compress(b"en.wikipedia Hong_Kong 500 0\nen.wikipedia Asia 90 0\nde Paris 80 0\n"))
    code = build_queries.main(["--pageviews", str(views), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "pageviews-20240101-000000.gz" in err and "en.wikipedia 2, de 1" in err
    assert "--projects" in err and "thresholds" not in err
