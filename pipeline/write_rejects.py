"""Write `rejects/{part:05d}.parquet`: every candidate dropped before a shard, in an order that depends on the
input only, so two runs of the same build (on any runner, with retries or not) write the same bytes.

Beam's own file sinks name and fill files by bundle, and bundles differ from run to run. Here each reject goes
to a part chosen by a stable hash of the record, the number of parts follows from the number of rejects (about
REJECTS_PER_FILE each, so one part fits a worker's memory), and a part's rows are sorted before writing.
A part is written under a temporary name and renamed when whole.
"""

import math

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from openwit.files import write_atomically
from openwit.hashing import stable_hash64

SCHEMA = pa.schema([("url", pa.string()), ("caption", pa.string()), ("stage", pa.string()),
                    ("reason", pa.string()), ("source", pa.string())])
COLUMNS = tuple(SCHEMA.names)
# ~200 bytes a row on disk, ~1 KB as Python dicts: a part stays well under a worker's memory.
REJECTS_PER_FILE = 200_000


def parts_for(n_rejects: int) -> int:
    return max(1, math.ceil(n_rejects / REJECTS_PER_FILE))


def reject_part(reject: dict, parts: int) -> int:
    return stable_hash64(*(reject[c] or "" for c in COLUMNS)) % parts


def reject_path(output: str, part: int) -> str:
    return FileSystems.join(output, "rejects", f"{part:05d}.parquet")


def write_part(part_and_rejects, output: str) -> str:
    part, rejects = part_and_rejects
    rows = sorted(rejects, key=lambda r: tuple(r[c] or "" for c in COLUMNS))
    path = reject_path(output, part)
    write_atomically(path, lambda f: pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), f))
    return path


class WriteRejects(beam.PTransform):
    """reject records -> rejects/{part:05d}.parquet, deterministic in names, contents and row order."""

    def __init__(self, output: str):
        super().__init__()
        self.output = output

    def expand(self, rejects):
        parts = (rejects
                 | "CountRejects" >> beam.combiners.Count.Globally()
                 | "Parts" >> beam.Map(parts_for))
        return (
            rejects
            | "KeyByPart" >> beam.Map(lambda r, n: (reject_part(r, n), r), beam.pvalue.AsSingleton(parts))
            | "GroupByPart" >> beam.GroupByKey()
            | "WritePart" >> beam.Map(write_part, self.output)
        )
