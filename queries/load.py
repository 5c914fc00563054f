"""Load an existing query list: plain text (one query per line), MetaCLIP's `metadata.json`
(a JSON list of strings), or our own `queries.parquet` (column `query`).

A query's id is its position in the loaded list; blank lines and repeated entries are dropped so that
ids are dense and each query text has exactly one id.
"""

import io
import json

from openwit.errors import InputError


def _read_bytes(path: str) -> bytes:
    # Beam's filesystems let users point at gs://, s3:// or hdfs:// lists as well as local files, and
    # decompress .gz/.bz2 by extension.
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            return f.read()
    except Exception as e:  # Beam raises its own IOError subclasses per filesystem
        raise InputError(f"cannot read query list {path!r}: {e}. Check the path given to --queries.") from e


def _parse_parquet(path: str, data: bytes) -> list[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as e:
        raise InputError(f"query list {path!r} ends in .parquet but is not a readable Parquet file: {e}") from e
    if "query" not in table.column_names:
        raise InputError(
            f"query list {path!r} has no 'query' column (columns: {table.column_names}); "
            "write the queries in a string column named 'query'."
        )
    return [q for q in table.column("query").to_pylist() if q is not None]


def _parse_json(path: str, data: bytes) -> list[str]:
    try:
        entries = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"query list {path!r} is not valid UTF-8 JSON: {e}") from e
    if not isinstance(entries, list):
        raise InputError(f"query list {path!r} must be a JSON list of strings (MetaCLIP's metadata.json format)")
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise InputError(f"query list {path!r}: entry {i} is {type(entry).__name__}, expected a string")
    return entries


def _parse_text(path: str, data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"query list {path!r} is not UTF-8 text (byte {e.start}); save it as UTF-8, one query per line"
        ) from e
    return text.splitlines()


def load_queries(path: str) -> list[str]:
    """The queries of the list at `path`, in file order, stripped, without blanks or repeats."""
    data = _read_bytes(path)
    name = path.lower()
    for suffix in (".gz", ".bz2"):
        name = name.removesuffix(suffix)
    if name.endswith(".parquet"):
        entries = _parse_parquet(path, data)
    elif name.endswith(".json"):
        entries = _parse_json(path, data)
    else:
        entries = _parse_text(path, data)

    queries, seen = [], set()
    for entry in entries:
        query = " ".join(entry.split())
        if query and query not in seen:
            seen.add(query)
            queries.append(query)
    if not queries:
        raise InputError(f"query list {path!r} holds no queries; give a list with at least one non-blank entry")
    return queries
