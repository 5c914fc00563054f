"""Real-world tables: whatever one row holds, it is a counted reject naming file:row, never a failed run
(issue 16, items 4-5); a table unusable as a whole stops the run before any work, naming what is wrong."""

import bz2
import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from build_helpers import load_stats, reject_rows, shard_rows
from openwit.errors import InputError
from pipeline import build_wit
from pipeline.read_pairs import TableColumns, check_tables, read_table

pytestmark = pytest.mark.timeout(300)
GOOD = b"http://127.0.0.1:9/ok.jpg,a good cat\n"


def reasons(path):
    return [(kind, r.get("reason"), r["source"].rsplit(":", 1)[1]) for kind, r in read_table(str(path),
                                                                                               TableColumns())]


def test_huge_field_nul_and_undecodable_bytes_are_rejects_with_their_row(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes(b"url,caption\n" + GOOD
                     + b"http://127.0.0.1:9/big.jpg," + b"x" * 300_000 + b"\n"  # over csv's 128 KiB field limit
                     + GOOD
                     + b"http://127.0.0.1:9/nul.jpg,a \x00 cat\n"
                     + b"http://127.0.0.1:9/latin1.jpg,caf\xe9 cat\n"
                     + GOOD)
    assert reasons(path) == [("candidate", None, "1"), ("reject", "field_too_large", "2"), ("candidate", None, "3"),
                             ("reject", "nul_byte", "4"), ("reject", "bad_encoding", "5"), ("candidate", None, "6")]


def test_excel_bom_is_accepted(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfurl,caption\n" + GOOD)
    check_tables([str(path)], TableColumns())
    assert reasons(path) == [("candidate", None, "1")]


@pytest.mark.parametrize("suffix,compress", [(".csv.gz", gzip.compress), (".csv.bz2", bz2.compress)])
def test_truncated_compressed_file_is_named_corrupt(tmp_path, suffix, compress):
    data = compress(b"url,caption\n" + GOOD * 20000)
    cut = tmp_path / ("cut" + suffix)
    cut.write_bytes(data[: len(data) * 3 // 4])
    got = reasons(cut)
    assert got[-1][:2] == ("reject", "corrupt_file") and 0 < len(got) < 20000
    assert all(kind == "candidate" for kind, _, _ in got[:-1])
    head = tmp_path / ("head" + suffix)
    head.write_bytes(data[:20])  # not even the header survives
    with pytest.raises(InputError, match="corrupt or truncated"):
        check_tables([str(head)], TableColumns())


def test_parquet_column_of_the_wrong_type_names_file_column_and_type(tmp_path):
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"url": [1, 2], "caption": ["a", "b"]}), path)
    with pytest.raises(InputError, match=r"ints.parquet.*column 'url' holds int64"):
        check_tables([str(path)], TableColumns())
    dictionary = tmp_path / "dict.parquet"
    pq.write_table(pa.table({"url": pa.array(["http://a.example/x.jpg"]).dictionary_encode(),
                             "caption": [None]}), dictionary)
    check_tables([str(dictionary)], TableColumns())  # dictionary-encoded text and all-null columns are text


def test_a_build_over_bad_rows_exits_0_and_counts_them(capsys, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_bytes(b"\xef\xbb\xbfurl,caption\n" + GOOD + b"http://127.0.0.1:9/b.jpg," + b"y" * 200_000 + b"\n"
                      + b"http://127.0.0.1:9/c.jpg,cat\x00\n" + b"http://127.0.0.1:9/d.jpg,caf\xe9 cat\n")
    queries = tmp_path / "queries.txt"
    queries.write_text("cat\n")
    output = tmp_path / "out"
    assert build_wit.main(["--pairs", str(pairs), "--queries", str(queries), "--output", str(output),
                           "--allow-private-addresses", "--retries", "0"]) == 0
    stats = load_stats(str(output))
    assert stats["candidates"] == 4 and stats["adds_up"]
    assert stats["rejected"]["read"] == {"field_too_large": 1, "nul_byte": 1, "bad_encoding": 1}
    assert sorted(r["source"].rsplit(":", 1)[1] for r in reject_rows(str(output))) == ["2", "3", "4"]
    assert not list(output.glob("beam-temp*"))
    [row] = shard_rows(str(output))  # the good row was attempted: the parquet says exactly how it failed
    assert row["error_message"] == "connection_error" and row["http_status"] is None
    assert "127.0.0.1" in row["error_detail"] and len(row["error_detail"]) <= 500


@pytest.mark.parametrize("extra,named", [
    (["--image-size", "50000"], "--image-size"), (["--threads", "-1"], "--threads"),
    (["--max-caption-chars", "0"], "--max-caption-chars"), (["--min-image-size", "-5"], "--min-image-size"),
    (["--min-caption-chars", "50", "--max-caption-chars", "10"], "above --max-caption-chars"),
    (["--max-bytes", "-1"], "--max-bytes"), (["--retries", "1000"], "--retries"),
])
def test_options_that_would_break_the_run_or_the_data_stop_it_before_any_work(capsys, tmp_path, extra, named):
    pairs = tmp_path / "pairs.csv"
    pairs.write_bytes(b"url,caption\n" + GOOD)
    queries = tmp_path / "queries.txt"
    queries.write_text("cat\n")
    output = tmp_path / "out"
    assert build_wit.main(["--pairs", str(pairs), "--queries", str(queries), "--output", str(output), *extra]) == 2
    assert named in capsys.readouterr().err
    assert not (output / "shards").exists() and not (output / "rejects").exists()


def test_damaged_parquet_is_a_corrupt_file_reject_after_its_good_rows(tmp_path):
    path = tmp_path / "pairs.parquet"
    n = 50_000
    pq.write_table(pa.table({"url": [f"http://a.example/{i}.jpg" for i in range(n)],
                             "caption": [f"cat {i}" for i in range(n)]}), path, row_group_size=10_000,
                   compression="none")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = b"\xff" * 2000  # a damaged page in the middle of the file
    path.write_bytes(bytes(data))
    check_tables([str(path)], TableColumns())  # the footer is intact: the run starts
    got = reasons(path)
    assert got[-1][:2] == ("reject", "corrupt_file") and 0 < len(got) <= n
