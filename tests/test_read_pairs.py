"""Reading url+caption tables: formats, column names, bad rows as counted rejects naming file and row."""

import gzip

import pyarrow as pa
import pyarrow.csv  # noqa: F401  (registers pa.csv)
import pyarrow.parquet as pq
import pytest

from openwit.errors import InputError
from openwit.files import expand_patterns
from pipeline.read_pairs import TableColumns, check_tables, read_table


def records(path, columns=TableColumns()):
    return list(read_table(str(path), columns))


def test_csv_tsv_parquet_and_gzip_give_the_same_candidates(tmp_path):
    urls = ["http://a.example/1.jpg", "https://b.example/x/2.png"]
    captions = ['A cat, "quoted", on a mat', "Tab-free caption"]
    pq.write_table(pa.table({"u": urls, "c": captions}), tmp_path / "t.parquet")
    pa.csv.write_csv(pa.table({"u": urls, "c": captions}), tmp_path / "t.csv")
    (tmp_path / "t.tsv").write_text("u\tc\n" + "".join(f"{u}\t{c}\n" for u, c in zip(urls, captions)))
    with gzip.open(tmp_path / "t.csv.gz", "wb") as f:
        f.write((tmp_path / "t.csv").read_bytes())
    columns = TableColumns(url="u", caption="c")
    for name in ("t.parquet", "t.csv", "t.tsv", "t.csv.gz"):
        got = records(tmp_path / name, columns)
        assert [(kind, r["url"], r["caption"]) for kind, r in got] == [
            ("candidate", u, c) for u, c in zip(urls, captions)], name
        assert got[1][1]["source"].endswith(f"{name}:2")


def test_bad_rows_become_rejects_with_file_and_row(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes(b"url,caption\n"
                     b"http://ok.example/a.jpg,fine caption\n"
                     b"http://ok.example/b.jpg,too,many,fields\n"
                     b",no url here\n"
                     b"ftp://files.example/c.jpg,not http\n"
                     b"http://ok.example/d.jpg,bad byte \xff in caption\n")
    got = records(path)
    assert [(kind, r.get("reason")) for kind, r in got] == [
        ("candidate", None), ("reject", "bad_row"), ("reject", "missing_url"), ("reject", "bad_url"),
        ("reject", "bad_encoding")]
    assert [r["source"].rsplit(":", 1)[1] for _, r in got] == ["1", "2", "3", "4", "5"]
    # one bad byte costs its row, counted, not the file; and the row is not silently altered


def test_missing_file_or_column_is_a_whole_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match="nope.parquet"):
        expand_patterns([str(tmp_path / "nope.parquet")], "--pairs")
    path = tmp_path / "pairs.csv"
    path.write_text("image,text\nhttp://a.example/1.jpg,hello\n")
    with pytest.raises(InputError, match=r"pairs.csv.*no column 'url'.*--url-col"):
        check_tables([str(path)], TableColumns())
    check_tables([str(path)], TableColumns(url="image", caption="text"))  # the right names pass
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(InputError, match="unknown format"):
        check_tables([str(tmp_path / "x.xlsx")], TableColumns())
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="broken.parquet.*not a readable parquet"):
        check_tables([str(tmp_path / "broken.parquet")], TableColumns())
