"""Build one shard: fetch every image of it, decode/resize/encode, drop eval-set near-duplicates, and write
`shards/{shard:05d}.tar` (WebDataset), `.parquet` (one row per attempted sample) and `_stats.json` (its counts,
and in `card` its share of the dataset card, pipeline/shard_card.py).

Image bytes are born here and go straight to the output: they are never shuffled between workers.
Files are written under temporary names and renamed when whole; `_stats.json` is written last and marks the
shard complete, so a rerun skips complete shards and redoes the rest (the result is the same bytes).
"""

import asyncio
import concurrent.futures
import gc
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from openwit import faults
from openwit.files import write_atomically
from pipeline import dns, fetch, politeness, resize, shard_card
from pipeline.sample_processes import SampleProcesses
from pipeline.samples import EVAL_DUPLICATE, INTERNAL_ERROR, SampleMaker
from pipeline.plan_shards import host_of
from pipeline.progress import ShardProgress, abnormal_failures

WINDOW_MIN = 256  # samples fetched ahead of the next one to write
DECONTAMINATE_MODES = ("drop", "report")
GC_YOUNG_THRESHOLD = 20_000  # container allocations between young collections in a shard worker (see setup)

PARQUET_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("url", pa.string()),
    ("caption", pa.string()),
    ("status", pa.string()),  # "success" or "failed", as in img2dataset
    ("error_message", pa.string()),  # the reason of a failure, from fetch.REASONS / resize.REASONS
    ("http_status", pa.int32()),  # of the last answer, when there was one (a 599 is http_other: here its code)
    ("error_detail", pa.string()),  # what exactly failed: the directive, the address, the exception text
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("original_width", pa.int32()),
    ("original_height", pa.int32()),
    ("sha256", pa.string()),  # of the downloaded bytes
    ("phash", pa.string()),  # pHash of the written file, hex (phash_of_written: imagehash on its 1/4-scale luma)
    ("queries", pa.list_(pa.int32())),
    ("page_url", pa.string()),
    ("eval_matches", pa.list_(pa.struct([
        ("eval_set", pa.string()), ("eval_id", pa.string()), ("method", pa.string()), ("distance", pa.float32()),
        ("verification", pa.string()), ("score", pa.float32()),
    ]))),
])


def stage_of(reason: str) -> str:
    """The stage a shard-level failure is counted under in stats.json."""
    if reason == EVAL_DUPLICATE:
        return "decontaminate"
    if reason == INTERNAL_ERROR:
        return "shard"
    return "image" if reason in resize.REASONS else "fetch"


def shard_path(output: str, shard: int, suffix: str) -> str:
    return FileSystems.join(output, "shards", f"{shard:05d}{suffix}")


@dataclass(frozen=True)
class ShardConfig:
    output: str
    fetch: fetch.FetchOptions
    image: resize.ImageOptions
    eval_index: str | None = None
    decontaminate: str = "drop"
    threads: int = 0  # decode/resize threads per worker; 0 = default_threads()
    processes: int = 0  # sample processes per worker (pipeline/sample_processes.py); 0: the threads do the work
    progress_dir: str | None = None  # local runs: where shards report progress for the launcher's bar


TAR_BLOCK = 512  # a member is a header block, then its data padded to whole blocks
TAR_RECORD = 20 * TAR_BLOCK  # the archive ends with two zero blocks, padded to whole records (tar -b20, tarfile)
# The header fields after the checksum: type "0" (regular file), no link name, GNU magic, no owner names, no
# device numbers, no prefix, then padding to the block.
_TAR_HEADER_TAIL = b"0" + bytes(100) + b"ustar  \0" + bytes(32 + 32 + 8 + 8 + 155 + 12)
_TAR_HEADER_TAIL_SUM = sum(_TAR_HEADER_TAIL) + 8 * ord(" ")  # the checksum field counts as eight spaces


def tar_header(name: str, size: int) -> bytes:
    """The GNU tar header of a regular file with fixed metadata (mode 0444, owner 0, mtime 0: nothing from the
    machine), so a rerun writes byte-identical tars. Byte for byte what tarfile writes for such a TarInfo in
    GNU_FORMAT (tests/test_write_shards.py); built here because tarfile assembles each header field by field
    in Python, ~40 us a member, three members a sample, all in the event loop's thread."""
    encoded = name.encode()
    if len(encoded) > 100 or size >= 8**11:
        raise ValueError(f"tar member {name!r} of {size} bytes needs GNU long-name or size extensions")
    head = encoded.ljust(100, b"\0") + b"0000444\0" + b"0000000\0" * 2 + b"%011o\0" % size + b"00000000000\0"
    return head + b"%06o\0 " % (sum(head) + _TAR_HEADER_TAIL_SUM) + _TAR_HEADER_TAIL


class TarWriter:
    """A tar written as a stream to an open file: members in order, then the end-of-archive blocks."""

    def __init__(self, f):
        self.f, self.size = f, 0

    def add(self, name: str, data: bytes) -> None:
        member = tar_header(name, len(data)) + data + bytes(-len(data) % TAR_BLOCK)
        self.f.write(member)
        self.size += len(member)

    def close(self) -> None:
        end = self.size + 2 * TAR_BLOCK
        self.f.write(bytes(2 * TAR_BLOCK + -end % TAR_RECORD))


def summarize(shard: int, rows: list[dict]) -> dict:
    """What the totals need from a shard: counts by status and reason, per-query kept counts, overlaps."""
    failed = Counter(r["error_message"] for r in rows if r["status"] != "success")
    query_kept = Counter(q for r in rows if r["status"] == "success" for q in r["queries"])
    overlap = [
        {**m, "sample_key": r["key"], "url": r["url"]} for r in rows for m in (r["eval_matches"] or [])
    ]
    return {
        "shard": shard,
        "count": len(rows),
        "successes": len(rows) - sum(failed.values()),
        "failed": dict(sorted(failed.items())),
        "query_kept": dict(query_kept),
        "overlap": overlap,
    }


def default_threads() -> int:
    """Decode threads of a worker: one per core, and one more. Decode, resize, encode (into a file: see
    resize._encode) and the pHash decode release the GIL, the Python around them and the fetch loop hold it, so
    at any moment one thread is usually queued for the GIL: with a thread per core, a core idles meanwhile
    (~1.45 of 2 cores busy); with one more, ~1.7. A whole 10k-URL build on 2 cores: ~14% less wall time, the
    same CPU; a fourth thread was slower again (bench/RESULTS.md, Speed pass 4)."""
    return (os.cpu_count() or 1) + 1


class ShardBuilder:
    """The plain-Python core of the shard step: one per worker, reused for every shard it gets."""

    def __init__(self, config: ShardConfig):
        self.config = config
        self.robots = politeness.RobotsCache()  # kept across this worker's shards
        self.dns = dns.DnsCache()  # likewise: a host's neighbouring shards often land on the same worker
        maker_args = (config.image, config.eval_index, config.decontaminate)
        if config.processes:
            # One event loop for the worker's lifetime: the sample processes it talks to serve every shard.
            self.loop, self.pool = asyncio.Runner(), None
            self.processes = SampleProcesses(config.processes, maker_args)
            self.loop.run(self.processes.start())
        else:
            self.loop, self.processes = None, None
            self.pool = concurrent.futures.ThreadPoolExecutor(config.threads or default_threads())
            self.maker = SampleMaker(*maker_args)

    def close(self):
        if self.processes:
            self.loop.run(self.processes.close())
            self.loop.close()
        else:
            self.pool.shutdown(wait=True)

    def is_complete(self, shard: int) -> bool:
        return FileSystems.exists(shard_path(self.config.output, shard, "_stats.json"))

    def read_rows(self, shard: int) -> list[dict]:
        with FileSystems.open(shard_path(self.config.output, shard, ".parquet")) as f:
            return pq.read_table(f).to_pylist()

    def remove_partial_files(self, shard: int) -> None:
        """Temporary files a crashed or preempted attempt at this shard left behind."""
        pattern = shard_path(self.config.output, shard, "*.tmp-*")
        leftovers = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        if leftovers:
            FileSystems.delete(leftovers)

    def build(self, shard: int, candidates: list[dict]) -> dict:
        """Write the shard (or reuse it when a previous run completed it) and return its summary."""
        progress = ShardProgress(self.config.progress_dir, shard, len(candidates)) if self.config.progress_dir else None
        if self.is_complete(shard):
            summary = summarize(shard, self.read_rows(shard))
            if progress:
                progress.finish(summary)
            return summary
        started = time.time()
        self.remove_partial_files(shard)
        candidates = sorted(candidates, key=lambda c: c["index"])
        rows = []

        def write_tar(f):
            tar = TarWriter(f)
            coroutine = self._fetch_and_write(candidates, tar, progress)
            rows.extend(self.loop.run(coroutine) if self.loop else asyncio.run(coroutine))
            tar.close()

        out = self.config.output
        write_atomically(shard_path(out, shard, ".tar"), write_tar)
        table = pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA)
        write_atomically(shard_path(out, shard, ".parquet"), lambda f: pq.write_table(table, f))
        summary = summarize(shard, rows)
        stats = {k: summary[k] for k in ("shard", "count", "successes", "failed")}
        stats["card"] = shard_card.summarize(table)  # so the dataset card never reads every shard parquet
        stats["duration_s"] = round(time.time() - started, 3)
        write_atomically(shard_path(out, shard, "_stats.json"),
                          lambda f: f.write(json.dumps(stats, indent=2).encode()))
        if progress:
            progress.finish(summary)  # the launcher's bar reports an abnormal shard
        elif abnormal_failures(summary):
            logging.warning(abnormal_failures(summary))
        return summary

    async def _fetch_and_write(self, candidates: list[dict], tar: TarWriter,
                               progress: ShardProgress | None = None) -> list[dict]:
        """Fetch and process the shard's samples concurrently; write each to the tar, in index order, as soon
        as it and all before it are done. A window bounds the samples in flight or waiting for an earlier one,
        so a worker's memory does not grow with the shard size (a shard is ~10k images)."""
        loop = asyncio.get_running_loop()
        # asyncio.Semaphore is first-come first-served, and tasks queue in index order: the lowest unwritten
        # sample always holds or gets a slot, so the window cannot deadlock.
        window = asyncio.Semaphore(max(WINDOW_MIN, 4 * self.config.fetch.max_concurrency))
        finished, rows = {}, []
        # The plan's share of each host for this shard: its per-host limits divided by the host's shard count.
        host_shards = {host_of(c["url"]): c.get("host_shards", 1) for c in candidates}
        async with fetch.Fetcher(self.config.fetch, self.robots, self.dns, host_shards) as fetcher:
            async def one(position, candidate):
                await window.acquire()
                result = await fetcher.fetch(candidate["url"])
                # Decoding and resizing are CPU work: threads or processes keep the event loop fetching meanwhile.
                if self.processes:
                    finished[position] = await self.processes.sample(candidate, result)
                else:
                    finished[position] = await loop.run_in_executor(self.pool, self.maker.sample, candidate, result)
                while len(rows) in finished:
                    row, files = finished.pop(len(rows))
                    for name, data in files:
                        tar.add(f"{row['key']}.{name}", data)
                    rows.append(row)
                    faults.maybe_fail("shard")
                    window.release()
                    if progress:
                        progress.add(row)

            await asyncio.gather(*(one(i, c) for i, c in enumerate(candidates)))
        return rows

class WriteShardFn(beam.DoFn):
    """(shard id, candidates) -> the shard's summary. The HTTP client's caches, the sample processes (or
    threads) and the eval index are made once per worker in setup(); the DoFn itself holds only the picklable
    config."""

    def __init__(self, config: ShardConfig):
        self.config = config

    def setup(self):
        self.builder = ShardBuilder(self.config)
        # What is alive now (Beam, our modules, the eval index) lives as long as the worker. Frozen, the cycle
        # collector stops rescanning it in each full collection that a shard's many short-lived objects
        # trigger: ~0.1 s each, ~1 per 1,000 images. And those objects (~100 containers a sample: rows, HTTP
        # requests, futures) are freed by reference counting, so a young collection every 700 allocations
        # (Python's default, every ~7 samples) finds little: every 20,000 cut the collector's time from ~0.7 to
        # ~0.25 s per 10,000 images (bench/RESULTS.md).
        gc.freeze()
        self.gc_threshold = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *self.gc_threshold[1:])

    def process(self, shard_and_candidates):
        shard, candidates = shard_and_candidates
        summary = self.builder.build(shard, list(candidates))
        for status in ("successes", "count"):
            beam.metrics.Metrics.counter("shards", status).inc(summary[status])
        for reason, n in summary["failed"].items():  # as in stats.json: namespace the stage, name the reason
            beam.metrics.Metrics.counter(stage_of(reason), reason).inc(n)
        yield summary

    def teardown(self):
        self.builder.close()
        # Back to normal for whatever else this process runs (a local build's report, `openwit experiment`, tests).
        gc.set_threshold(*self.gc_threshold)
        gc.unfreeze()
