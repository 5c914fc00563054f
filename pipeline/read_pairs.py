"""Read candidate pairs from url+caption tables: Parquet, CSV or TSV, one or many files, any Beam filesystem.

`check_tables` runs when the pipeline is built: a missing file or column is a whole-input error that stops the
run before any work (exit 2, naming the file). `read_table` is the per-file core that streams rows, so a
table never sits whole in memory; a bad row becomes a reject naming file and row, never a failed run.
"""

import bz2
import contextlib
import csv
import gzip
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from openwit.errors import InputError
from openwit.files import expand_patterns, text_lines

STAGE = "read"
REASONS = {
    "bad_row": "the row has a different number of fields than the header",
    "missing_url": "the url field is empty",
    "bad_url": "the url is not an absolute http(s) URL",
    "field_too_large": "a field is longer than Python's csv field limit (csv.field_size_limit(), 128 KiB)",
    "bad_encoding": "a field holds bytes that are not UTF-8 (the row is dropped, not silently altered)",
    "nul_byte": "a field holds a NUL character",
    "corrupt_file": "the compressed file is truncated or damaged here; its rows before this one were read",
}
# What a damaged .gz or .bz2 raises while it is read (truncated stream, bad CRC, bad block).
_CORRUPT = (EOFError, zlib.error, gzip.BadGzipFile, OSError)
# The types a url or caption column may have in a Parquet table.
_TEXT_TYPES = ("string", "large_string", "string_view", "null")
FORMATS = ("parquet", "csv", "tsv")


@dataclass(frozen=True)
class TableColumns:
    url: str = "url"
    caption: str = "caption"
    page_url: str | None = None  # optional column with the page the image was found on


def table_format(path: str) -> str:
    name = path.lower()
    for suffix in (".gz", ".bz2", ".zst"):
        name = name.removesuffix(suffix)
    for fmt in FORMATS:
        if name.endswith("." + fmt):
            return fmt
    if name.endswith(".txt"):
        return "tsv"
    raise InputError(
        f"pairs table {path!r}: unknown format; name it *.parquet, *.csv or *.tsv (optionally .gz or .bz2)"
    )


@contextlib.contextmanager
def _open_text(path: str):
    """The lines of a CSV/TSV table, decoded. .gz and .bz2 through Python's own readers, which raise on a
    truncated or damaged stream (Beam's return what they got, so a cut file read as a short, valid one).
    Bytes that are not UTF-8 become lone surrogates, so the row holding them is found and rejected."""
    name = path.lower()
    if not name.endswith((".gz", ".bz2")):
        with FileSystems.open(path) as f:
            yield text_lines(f, errors="surrogateescape")
        return
    with FileSystems.open(path, compression_type="uncompressed") as raw:
        with gzip.GzipFile(fileobj=raw) if name.endswith(".gz") else bz2.BZ2File(raw) as f:
            yield text_lines(f, errors="surrogateescape")


def _strip_bom(header: list[str]) -> list[str]:
    # Excel's "CSV UTF-8" starts with a byte-order mark, which would stick to the first column's name.
    return [header[0].removeprefix("\ufeff"), *header[1:]] if header else header


def _header(path: str) -> "list[str] | pa.Schema":
    """The column names of a CSV/TSV table; the schema of a Parquet one (its column types are checked too)."""
    fmt = table_format(path)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with FileSystems.open(path) as f:
                return pq.ParquetFile(f).schema_arrow
        with _open_text(path) as lines:
            return _strip_bom(next(csv.reader(lines, delimiter="\t" if fmt == "tsv" else ","), []))
    except InputError:
        raise
    except _CORRUPT as e:
        raise InputError(f"pairs table {path!r} is corrupt or truncated ({type(e).__name__}: {e}); "
                         "download or compress it again") from e
    except Exception as e:
        raise InputError(f"pairs table {path!r} is not a readable {fmt} file: {e}") from e


def check_tables(paths: list[str], columns: TableColumns) -> None:
    """Fail early, naming the file, when a table cannot be read or lacks a column the run needs."""
    for path in paths:
        schema = _header(path)
        header = schema if isinstance(schema, list) else schema.names
        needed = [c for c in (columns.url, columns.caption, columns.page_url) if c]
        missing = [c for c in needed if c not in header]
        if missing:
            raise InputError(
                f"pairs table {path!r} has no column {missing[0]!r} (columns: {header}); "
                "name the right ones with --url-col, --caption-col and --page-url-col"
            )
        if not isinstance(schema, list):
            for name in needed:
                kind = schema.field(name).type
                value_kind = kind.value_type if hasattr(kind, "value_type") else kind  # dictionary-encoded
                if str(value_kind) not in _TEXT_TYPES:
                    raise InputError(f"pairs table {path!r}: column {name!r} holds {kind}, not text (string); "
                                     "convert it, or name the right column with --url-col / --caption-col")


def _rows_csv(path: str, delimiter: str, columns: TableColumns):
    """(row number, row dict), or (row number, reason) for a row that cannot be read."""
    with _open_text(path) as lines:
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            header = _strip_bom(next(reader, []))
        except _CORRUPT:  # checked when the run began; damaged where a worker reads it again
            yield 1, "corrupt_file"
            return
        index = {name: i for i, name in enumerate(header)}
        row_number = 0
        while True:
            row_number += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error:  # the reader drops the rest of the line and goes on with the next one
                yield row_number, "field_too_large"
                continue
            except _CORRUPT:
                yield row_number, "corrupt_file"
                return
            if len(row) != len(header):
                yield row_number, "bad_row"
                continue
            yield row_number, {
                "url": row[index[columns.url]],
                "caption": row[index[columns.caption]],
                "page_url": row[index[columns.page_url]] if columns.page_url else "",
            }


def _rows_parquet(path: str, columns: TableColumns):
    import pyarrow.parquet as pq

    names = [c for c in (columns.url, columns.caption, columns.page_url) if c]
    with FileSystems.open(path) as f:
        row_number = 0
        batches = pq.ParquetFile(f).iter_batches(batch_size=8192, columns=names)
        while True:
            try:
                batch = next(batches, None)
            except (OSError, pa.ArrowException):  # a damaged page or column chunk: the rest is unreadable
                yield row_number + 1, "corrupt_file"
                return
            if batch is None:
                return
            data = batch.to_pydict()
            for i in range(batch.num_rows):
                row_number += 1
                yield row_number, {
                    "url": data[columns.url][i],
                    "caption": data[columns.caption][i],
                    "page_url": data[columns.page_url][i] if columns.page_url else "",
                }


def is_fetchable_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _bad_text(row: dict) -> str | None:
    for value in row.values():
        if value:
            if "\x00" in value:
                return "nul_byte"
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: an undecodable byte of the file
                return "bad_encoding"
    return None


def read_table(path: str, columns: TableColumns):
    """Yield ("candidate", dict) or ("reject", dict) for every data row of the table at `path`."""
    fmt = table_format(path)
    rows = _rows_parquet(path, columns) if fmt == "parquet" else _rows_csv(path, "\t" if fmt == "tsv" else ",", columns)
    for row_number, row in rows:
        source = f"{path}:{row_number}"
        if isinstance(row, str):
            yield "reject", {"url": "", "caption": "", "stage": STAGE, "reason": row, "source": source}
            continue
        reason = _bad_text(row)
        if reason:
            yield "reject", {"url": "", "caption": "", "stage": STAGE, "reason": reason, "source": source}
            continue
        url = (row["url"] or "").strip()
        caption = row["caption"] or ""
        reason = "missing_url" if not url else None if is_fetchable_url(url) else "bad_url"
        if reason:
            yield "reject", {"url": url, "caption": caption, "stage": STAGE, "reason": reason, "source": source}
        else:
            yield "candidate", {"url": url, "caption": caption, "page_url": (row["page_url"] or "").strip(),
                                "source": source}


class _ReadTableFn(beam.DoFn):
    def __init__(self, columns: TableColumns):
        self.columns = columns

    def process(self, path):
        for kind, record in read_table(path, self.columns):
            if kind == "candidate":
                yield record
            else:
                yield beam.pvalue.TaggedOutput("rejects", record)


class ReadPairs(beam.PTransform):
    """url+caption tables -> (candidates, rejects). Files are checked when the pipeline is built."""

    def __init__(self, patterns: list[str], columns: TableColumns = TableColumns()):
        super().__init__()
        self.paths = expand_patterns(patterns, "--pairs")
        check_tables(self.paths, columns)
        self.columns = columns

    def expand(self, root):
        outputs = (
            root
            | "TablePaths" >> beam.Create(self.paths)
            # One file per element: the runner spreads files over workers.
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadRows" >> beam.ParDo(_ReadTableFn(self.columns)).with_outputs("rejects", main="candidates")
        )
        return outputs.candidates, outputs.rejects
