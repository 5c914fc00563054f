"""OUT/build_record.json: what built an output folder, so a rerun reuses its shards only when they are its own.

A shard counts as complete when its `_stats.json` exists, whatever produced it. A rerun into a folder that held
a build of other inputs or options would otherwise mix old shards into the new dataset and exit 0. The record
holds the OpenWIT version, every option that changes the output's bytes, and each input file with its size and
content hash (or, above HASH_MAX_BYTES, its modification time). A rerun with the same record resumes (complete
shards are skipped, as after a crash); a different one stops with exit 2 naming what changed, unless
`--overwrite`, which deletes the previous build's files and starts over.
"""

import hashlib
import json

from apache_beam.io.filesystems import FileSystems

import openwit
from openwit.errors import InputError
from openwit.files import expand_patterns
from openwit.options import help_parser

RECORD_NAME = "build_record.json"
HASH_MAX_BYTES = 64 * 2**20  # larger inputs are identified by size and modification time, not read whole
# Options that change how fast or where a build runs, never what it writes.
NOT_IN_RECORD = frozenset({"output", "overwrite", "threads", "sample_processes", "max_concurrency",
                           "per_host_concurrency", "min_host_delay", "max_host_rate", "dns_servers", "progress"})
# Options naming input files: recorded as the files they match (a glob may match other files next time).
INPUT_OPTIONS = ("pairs", "warc", "wat", "page_urls", "queries", "eval_index")
# What a build writes at the top of its output folder (besides the record); --overwrite deletes these only.
OUTPUT_PATTERNS = ("shards/*", "rejects/*", "overlap/*", "stats.json", "sizes.json", "report.html",
                   "queries.parquet")


def describe_file(path: str) -> dict:
    meta = FileSystems.match([path])[0].metadata_list[0]
    entry = {"path": path, "size": meta.size_in_bytes}
    if meta.size_in_bytes <= HASH_MAX_BYTES:
        digest = hashlib.sha256()
        with FileSystems.open(path, compression_type="uncompressed") as f:
            for block in iter(lambda: f.read(2**20), b""):
                digest.update(block)
        entry["sha256"] = digest.hexdigest()
    else:
        entry["mtime"] = meta.last_updated_in_seconds
    return entry


def make_record(o) -> dict:
    """The record of a build from its parsed pipeline options (only the pipeline's own, not Beam's)."""
    options = {a.dest: getattr(o, a.dest) for a in help_parser(type(o), "", "")._actions if a.dest != "help"}
    inputs = {}
    for name in INPUT_OPTIONS:
        value = options.get(name)
        if value:
            patterns = value if isinstance(value, list) else [value]
            inputs[name] = [describe_file(p) for p in expand_patterns(patterns, "--" + name.replace("_", "-"))]
    settings = {k: v for k, v in sorted(options.items()) if k not in NOT_IN_RECORD and k not in INPUT_OPTIONS}
    return {"openwit_version": openwit.__version__, "options": settings, "inputs": inputs}


def differences(old: dict, new: dict) -> list[str]:
    """What changed between two records, in words a user can act on."""
    changes = []
    if old.get("openwit_version") != new["openwit_version"]:
        changes.append(f"OpenWIT version {old.get('openwit_version')} -> {new['openwit_version']}")
    old_options = old.get("options", {})
    for name in sorted(set(old_options) | set(new["options"])):
        if old_options.get(name, "<unset>") != new["options"].get(name, "<unset>"):
            changes.append(f"--{name.replace('_', '-')} {old_options.get(name, '<unset>')!r} -> "
                           f"{new['options'].get(name, '<unset>')!r}")
    old_inputs = old.get("inputs", {})
    for name in sorted(set(old_inputs) | set(new["inputs"])):
        before = {f["path"]: f for f in old_inputs.get(name, [])}
        after = {f["path"]: f for f in new["inputs"].get(name, [])}
        for path in sorted(set(before) | set(after)):
            if path not in after:
                changes.append(f"--{name.replace('_', '-')} no longer includes {path}")
            elif path not in before:
                changes.append(f"--{name.replace('_', '-')} now includes {path}")
            elif before[path] != after[path]:
                changes.append(f"--{name.replace('_', '-')} file {path} changed (size {before[path].get('size')} "
                               f"-> {after[path].get('size')}, content or modification time differs)")
    return changes


def previous_outputs(output: str) -> list[str]:
    found = []
    for pattern in OUTPUT_PATTERNS:
        try:
            found += [m.path for m in FileSystems.match([FileSystems.join(output, pattern)])[0].metadata_list]
        except Exception:  # nothing there: some filesystems raise instead of matching nothing
            pass
    return found


def claim_output(output: str, record: dict, overwrite: bool) -> None:
    """Before any work: make sure `output` holds nothing of another build, then write this build's record."""
    path = FileSystems.join(output, RECORD_NAME)
    previous = previous_outputs(output)
    if overwrite:
        if previous:
            FileSystems.delete(previous)
    elif FileSystems.exists(path):
        with FileSystems.open(path) as f:
            old = json.load(f)
        changes = differences(old, record)
        if changes:
            raise InputError(
                f"output folder {output!r} holds a build of other inputs or options, whose complete shards a "
                f"rerun would reuse: {'; '.join(changes)}. Give another --output, or --overwrite to delete "
                "that build and start over")
        return  # the same build: resume, skipping complete shards
    elif previous:
        raise InputError(
            f"output folder {output!r} holds files of a build without {RECORD_NAME} (an older OpenWIT or "
            f"another tool), e.g. {previous[0]}; give another --output, or --overwrite to delete them")
    with FileSystems.create(path) as f:
        f.write(json.dumps(record, indent=2, sort_keys=True, default=str).encode())
