"""Finding and opening the query builder's inputs on any Beam filesystem (local, gs://, s3://, hdfs://).

Dumps come compressed as Wikimedia publishes them (`.bz2`, `.gz`). We decompress ourselves rather than through
Beam's CompressedFile so that a truncated download is an error (Python's bz2/gzip raise EOFError at a missing
end-of-stream marker) instead of a silently shorter corpus, and so multistream bz2 files read whole.
"""

import bz2
import gzip
import zlib

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from openwit.errors import InputError

CHUNK_BYTES = 1 << 20


def file_size(path: str) -> int:
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def open_raw(path: str):
    """The file's bytes as stored (no decompression), seekable on local and cloud filesystems."""
    try:
        return FileSystems.open(path, mime_type="application/octet-stream",
                                compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:
        raise InputError(f"cannot open {path!r}: {e}") from e


def open_decompressed(path: str):
    """A binary reader of the file's content, decompressed by extension (.bz2, .gz, else as is)."""
    raw = open_raw(path)
    lowered = path.lower()
    if lowered.endswith(".bz2"):
        return bz2.BZ2File(raw)  # reads every stream of a multistream file
    if lowered.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    return raw


def read_chunks(path: str, what: str):
    """Yield the decompressed content of `path` in chunks; damage becomes an InputError naming the file.

    `what` names the kind of file for the message ("Wikipedia dump", "page-view file", ...).
    """
    done = 0
    with open_decompressed(path) as f:
        while True:
            try:
                chunk = f.read(CHUNK_BYTES)
            except EOFError as e:
                raise InputError(
                    f"{what} {path!r} ends early after {done} decompressed bytes ({e}); the file is truncated, "
                    "download it again") from e
            except (OSError, zlib.error) as e:  # bz2: "Invalid data stream"; gzip: BadGzipFile (an OSError)
                raise InputError(
                    f"{what} {path!r} is not a valid {path.rsplit('.', 1)[-1]} file at decompressed byte {done}: "
                    f"{e}; check that the file is what its name says and is not damaged") from e
            if not chunk:
                return
            done += len(chunk)
            yield chunk


def read_lines(path: str, what: str):
    """Yield (line_number, line_bytes) of the decompressed file, 1-based, without the line ending."""
    number = 0
    rest = b""
    for chunk in read_chunks(path, what):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            number += 1
            yield number, line.rstrip(b"\r")
    if rest:
        yield number + 1, rest.rstrip(b"\r")
