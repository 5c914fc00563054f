"""Files on any Beam filesystem (local, gs://, s3://, hdfs://): globs, text lines, and whole-file writes."""

import uuid

from apache_beam.io.filesystems import FileSystems

from openwit.errors import InputError


def expand_patterns(patterns: list[str], option: str) -> list[str]:
    """Every file matched by the paths or globs given to `option`, sorted, each once.

    A pattern that matches nothing is a whole-input error, raised when the pipeline is built."""
    paths = []
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as e:  # Beam raises BeamIOError, or a filesystem's own error for a bad scheme
            raise InputError(f"{option} {pattern!r}: cannot list files: {e}") from e
        if not matched:
            raise InputError(f"{option} {pattern!r} matches no file (no file matches this path or glob); "
                             f"check the path given to {option}")
        paths.extend(m.path for m in matched)
    return sorted(set(paths))


def text_lines(f, errors: str = "replace"):
    """Decoded lines of a Beam file object (its compressed files are not io streams, so no TextIOWrapper).
    A stray invalid byte in one line must not stop a million-line file: decode with replacement (or, with
    errors="surrogateescape", keep it findable so the caller can count it)."""
    for line in iter(f.readline, b""):
        yield line.decode("utf-8", errors=errors)


def write_atomically(path: str, data_writer) -> None:
    """Write through `data_writer(f)` to a temporary name, then rename: a crash, a preempted worker or a retried
    bundle never leaves a half-written file under the final name."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(tmp) as f:
        data_writer(f)
    FileSystems.rename([tmp], [path])
