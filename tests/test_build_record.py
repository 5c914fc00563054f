"""OUT/build_record.json: a rerun reuses shards only of the same build (issue 16, item 1)."""

import json
import os

import pytest

from build_helpers import shard_rows
from pipeline import build_wit

pytestmark = pytest.mark.timeout(300)


def write_pairs(path, n):
    # Port 9 (discard) on loopback refuses at once: every sample is attempted and fails fast, no web needed.
    path.write_text("url,caption\n" + "".join(f"http://127.0.0.1:9/{i}.jpg,a cat number {i}\n" for i in range(n)))
    return str(path)


def run(capsys, pairs, queries, output, *extra):
    code = build_wit.main(["--pairs", pairs, "--queries", queries, "--output", str(output),
                           "--allow-private-addresses", "--samples-per-shard", "10", "--retries", "0", *extra])
    return code, capsys.readouterr().err


def test_rerun_with_other_input_or_options_stops_naming_the_change(capsys, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text("cat\n")
    pairs = write_pairs(tmp_path / "pairs.csv", 40)
    output = tmp_path / "out"
    assert run(capsys, pairs, str(queries), output)[0] == 0
    record = json.loads((output / "build_record.json").read_text())
    assert record["openwit_version"] and record["inputs"]["pairs"][0]["sha256"]
    assert record["options"]["image_size"] == 256 and "threads" not in record["options"]

    write_pairs(tmp_path / "pairs.csv", 20)  # same path, other content
    code, err = run(capsys, pairs, str(queries), output)
    assert code == 2 and "pairs.csv changed" in err and "--overwrite" in err
    write_pairs(tmp_path / "pairs.csv", 40)
    code, err = run(capsys, pairs, str(queries), output, "--image-size", "128")
    assert code == 2 and "--image-size 256 -> 128" in err
    # The same build again resumes: complete shards are reused, not rewritten.
    stats_file = output / "shards" / "00000_stats.json"
    mtime = os.stat(stats_file).st_mtime_ns
    assert run(capsys, pairs, str(queries), output, "--threads", "1")[0] == 0  # threads change no byte
    assert os.stat(stats_file).st_mtime_ns == mtime

    small = write_pairs(tmp_path / "small.csv", 12)
    assert run(capsys, small, str(queries), output, "--overwrite")[0] == 0
    urls = {r["url"] for r in shard_rows(str(output))}
    assert len(urls) == 12  # nothing of the 40-row build is left in the shards
    assert json.loads((output / "build_record.json").read_text())["inputs"]["pairs"][0]["path"].endswith(
        "small.csv")


def test_folder_with_shards_but_no_record_is_not_reused(capsys, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text("cat\n")
    pairs = write_pairs(tmp_path / "pairs.csv", 3)
    shards = tmp_path / "out" / "shards"
    shards.mkdir(parents=True)
    (shards / "00000_stats.json").write_text("{}")
    code, err = run(capsys, pairs, str(queries), tmp_path / "out")
    assert code == 2 and "00000_stats.json" in err and "--overwrite" in err
