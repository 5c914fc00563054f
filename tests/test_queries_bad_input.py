"""Bad inputs to the query builder: a clear error naming the file (exit 2), or a counted reject."""

import bz2
import gzip
import hashlib

import pytest

from queries import build_queries

pytestmark = pytest.mark.timeout(300)

HEADER = '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11">\n'


def _words(seed: int, n: int) -> str:
    # Incompressible-ish text, so a truncated bz2 still decompresses to more than the first read.
    return " ".join(hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:8] for i in range(n))


def _page(i: int, text: str) -> str:
    return f"<page><title>P{i}</title><ns>0</ns><id>{i}</id><revision><text>{text}</text></revision></page>\n"


def _run(capsys, *argv):
    code = build_queries.main(list(argv))
    return code, capsys.readouterr().err


def test_truncated_bz2_dump_is_an_error_naming_the_file(tmp_path, capsys):
    xml = HEADER + "".join(_page(i, _words(i, 2000)) for i in range(150)) + "</mediawiki>\n"
    data = bz2.compress(xml.encode())
    dump = tmp_path / "enwiki.xml.bz2"
    dump.write_bytes(data[: len(data) * 3 // 4])  # > 1 MiB decompresses before the cut: found by a worker
    code, err = _run(capsys, "--wiki-dump", str(dump), "--output", str(tmp_path / "out"))
    assert code == 2
    assert str(dump) in err and "truncated" in err
    assert not (tmp_path / "out" / "queries.txt").exists()


def test_truncated_small_dump_fails_before_the_run(tmp_path, capsys):
    data = bz2.compress((HEADER + _page(1, "some words") + "</mediawiki>\n").encode())
    dump = tmp_path / "small.xml.bz2"
    dump.write_bytes(data[:-10])
    code, err = _run(capsys, "--wiki-dump", str(dump), "--output", str(tmp_path / "out"))
    assert code == 2 and str(dump) in err and "truncated" in err


def test_a_file_that_is_not_xml(tmp_path, capsys):
    dump = tmp_path / "notes.xml"
    dump.write_text("These are my notes, not a dump.\n")
    code, err = _run(capsys, "--wiki-dump", str(dump), "--output", str(tmp_path / "out"))
    assert code == 2 and str(dump) in err and "not a MediaWiki XML export" in err


def test_a_bz2_file_that_is_not_bz2(tmp_path, capsys):
    dump = tmp_path / "dump.xml.bz2"
    dump.write_text("<mediawiki>plain text with a bz2 name</mediawiki>")
    code, err = _run(capsys, "--wiki-dump", str(dump), "--output", str(tmp_path / "out"))
    assert code == 2 and str(dump) in err and "bz2" in err


def test_broken_xml_names_the_line(tmp_path, capsys):
    dump = tmp_path / "broken.xml"
    dump.write_text(HEADER + _page(1, "fine words") + "<page><title>x</title>\n<ns>0</nsx>\n</page>\n"
                    + "</mediawiki>\n")
    code, err = _run(capsys, "--wiki-dump", str(dump), "--output", str(tmp_path / "out"))
    assert code == 2 and str(dump) in err and "line 4, column 7" in err


def test_wordnet_directory_missing_files(tmp_path, capsys):
    folder = tmp_path / "dict"
    folder.mkdir()
    (folder / "data.noun").write_text("  1 license\n00001740 03 n 01 entity 0 000 | that which exists\n")
    code, err = _run(capsys, "--wordnet", str(folder), "--output", str(tmp_path / "out"))
    assert code == 2
    assert "missing data.verb, data.adj, data.adv." in err


def test_wordnet_damaged_line_names_file_and_line(tmp_path, capsys):
    folder = tmp_path / "dict"
    folder.mkdir()
    for name in ("data.verb", "data.adj", "data.adv"):
        (folder / name).write_text("  1 license\n00001740 03 v 01 exist 0 000 | be\n")
    (folder / "data.noun").write_text("  1 license\n00001740 03 n 01 entity 0 000 | x\nthis is not a synset\n")
    code, err = _run(capsys, "--wordnet", str(folder), "--output", str(tmp_path / "out"))
    assert code == 2 and "data.noun" in err and "line 3" in err


def test_pageview_file_of_garbage_names_file_and_line(tmp_path, capsys):
    views = tmp_path / "pageviews-1.gz"
    views.write_bytes(gzip.compress(b"<html>\n<body>Not found</body>\n</html>\n"))
    code, err = _run(capsys, "--pageviews", str(views), "--output", str(tmp_path / "out"))
    assert code == 2 and str(views) in err and "line 1" in err


def test_truncated_pageview_gzip(tmp_path, capsys):
    data = gzip.compress(b"".join(f"en Title_{i} 100 0\n".encode() for i in range(1000)))
    views = tmp_path / "pageviews-2.gz"
    views.write_bytes(data[: len(data) // 2])
    code, err = _run(capsys, "--pageviews", str(views), "--output", str(tmp_path / "out"))
    assert code == 2 and str(views) in err and "truncated" in err


def test_no_input_and_unmatched_glob(tmp_path, capsys):
    code, err = _run(capsys, "--output", str(tmp_path / "out"))
    assert code == 2 and "no input" in err
    code, err = _run(capsys, "--pageviews", str(tmp_path / "none-*.gz"), "--output", str(tmp_path / "out"))
    assert code == 2 and "matches no file" in err


def test_nothing_passing_the_thresholds_is_an_error_not_an_empty_list(tmp_path, capsys):
    views = tmp_path / "pageviews-3.gz"
    views.write_bytes(gzip.compress(b"en Rare_title 3 0\n"))
    code, err = _run(capsys, "--pageviews", str(views), "--output", str(tmp_path / "out"))
    assert code == 2 and "no query passed the thresholds" in err
    assert not (tmp_path / "out" / "queries.txt").exists()


def test_dump_with_only_redirects_is_an_error(tmp_path, capsys):
    dump = tmp_path / "redirects.xml"
    dump.write_text(HEADER + '<page><title>A</title><ns>0</ns><redirect title="B"/><revision><text>#REDIRECT '
                    "[[B]]</text></revision></page>\n</mediawiki>\n")
    views = tmp_path / "pageviews-4.gz"
    views.write_bytes(gzip.compress(b"en B 300 0\n"))
    code, err = _run(capsys, "--wiki-dump", str(dump), "--pageviews", str(views),
                     "--output", str(tmp_path / "out"))
    assert code == 2 and "no article" in err


def test_misspelt_option_is_an_error_not_ignored(tmp_path, capsys):
    code, err = _run(capsys, "--wordnet", str(tmp_path), "--output", str(tmp_path / "out"), "--min-unigrams", "5")
    assert code == 2 and "unknown option --min-unigrams" in err
