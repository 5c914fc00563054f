"""User mistakes stop the run before any work with a message naming what is wrong, and exit status 2."""

import os
import subprocess
import sys

import pytest

from pipeline import build_wit

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def inputs(tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,A red cat on a mat\n")
    queries = tmp_path / "queries.txt"
    queries.write_text("cat\nmat\n")
    return str(pairs), str(queries), str(tmp_path / "out")


def run_main(capsys, pairs, queries, output, *extra):
    code = build_wit.main(["--pairs", pairs, "--queries", queries, "--output", output, *extra])
    return code, capsys.readouterr().err


def test_missing_pairs_file(capsys, inputs, tmp_path):
    _, queries, output = inputs
    code, err = run_main(capsys, str(tmp_path / "missing.csv"), queries, output)
    assert code == 2 and "missing.csv" in err and "--pairs" in err


def test_missing_column(capsys, inputs, tmp_path):
    _, queries, output = inputs
    pairs = tmp_path / "other.csv"
    pairs.write_text("image,alt\nhttp://a.example/1.jpg,cat\n")
    code, err = run_main(capsys, str(pairs), queries, output)
    assert code == 2 and "other.csv" in err and "'url'" in err and "--url-col" in err


@pytest.mark.parametrize("name,content,message", [
    ("empty.txt", b"\n  \n", "holds no queries"),
    ("latin1.txt", b"caf\xe9\n", "not UTF-8"),
    ("metadata.json", b"{\"not\": \"a list\"}", "JSON list of strings"),
    ("queries.parquet", b"garbage", "not a readable Parquet"),
])
def test_bad_query_lists(capsys, inputs, tmp_path, name, content, message):
    pairs, _, output = inputs
    path = tmp_path / name
    path.write_bytes(content)
    code, err = run_main(capsys, pairs, str(path), output)
    assert code == 2 and name in err and message in err


def test_missing_query_list(capsys, inputs, tmp_path):
    pairs, _, output = inputs
    code, err = run_main(capsys, pairs, str(tmp_path / "nowhere.txt"), output)
    assert code == 2 and "nowhere.txt" in err


def test_unwritable_output(capsys, inputs, tmp_path):
    pairs, queries, _ = inputs
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, err = run_main(capsys, pairs, queries, str(blocker / "out"))
    assert code == 2 and "not writable" in err and "a-file" in err


def test_bad_option_values(capsys, inputs):
    code, err = run_main(capsys, *inputs, "--samples-per-shard", "0")
    assert code == 2 and "--samples-per-shard" in err
    code, err = run_main(capsys, *inputs, "--oversample", "0.5")
    assert code == 2 and "--oversample" in err


def test_cli_exit_status_is_2_with_a_message_not_a_traceback(inputs, tmp_path):
    _, queries, output = inputs
    openwit = os.path.join(os.path.dirname(sys.executable), "openwit")
    proc = subprocess.run([openwit, "build", "--pairs", str(tmp_path / "gone.parquet"), "--queries", queries,
                           "--output", output], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "gone.parquet" in proc.stderr and "Traceback" not in proc.stderr


def test_misspelt_option_is_reported_not_silently_dropped(capsys, inputs):
    code, err = run_main(capsys, *inputs, "--max-per-querry", "5")
    assert code == 2 and "unknown option --max-per-querry" in err


def test_help_lists_our_options(capsys):
    assert build_wit.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--pairs" in out and "--output" in out and "--max-per-query" in out


def test_encode_quality_is_checked_for_the_chosen_format(capsys, inputs):
    code, err = run_main(capsys, *inputs, "--encode-format", "png", "--encode-quality", "50")
    assert code == 2 and "compression level 0-9" in err
    code, err = run_main(capsys, *inputs, "--encode-quality", "101")
    assert code == 2 and "0-100" in err
