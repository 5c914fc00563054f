"""Progress and operations of a build: a live progress bar on local runs, and a warning when a shard's failures
are abnormal, naming the dominant reason. (Beam counters per stage and reason, which runners such as Dataflow
show live, are incremented where the counts are made: build_wit's rejects and WriteShardFn.)

The bar is fed through files, not Beam metrics: local runners report metrics only when the pipeline ends. Each
shard, while it is built, rewrites a small JSON file of its counts in a local folder (`ShardProgress`); the plan
writes the number of shards and samples there (`RecordPlan`); the launcher reads the folder twice a second and
redraws the bar (`ProgressBar`). Files work the same for the in-process and the multi-process local runner, and a
retried shard rewrites its own file, so nothing is counted twice. On local runs the launcher also prints the
abnormal-shard warnings, above the bar; elsewhere the worker logs them (Dataflow shows worker logs).
"""

import contextlib
import glob
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter

import apache_beam as beam
from tqdm import tqdm

# Runners whose workers share the launcher's machine (and so its temporary folder).
LOCAL_RUNNERS = frozenset({"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner"})
WRITE_EVERY_S = 0.5
# A shard is abnormal when more than this share of at least MIN_SAMPLES samples failed: stale URL lists lose
# 20-40% of their images (img2dataset's LAION runs), a wrong resolver or a ban loses most of them.
ABNORMAL_FAILURE_RATE = 0.5
MIN_SAMPLES = 10
# What to try first when one reason dominates the failures of a shard.
HINTS = {
    "dns_error": "names do not resolve: the resolver may be overloaded, give --dns-servers (a local caching "
                 "resolver, or public servers)",
    "timeout": "hosts answer too slowly: lower --max-concurrency or raise --fetch-timeout",
    "connection_error": "connections fail: lower --max-concurrency, or check the worker's network",
    "http_429": "hosts are throttling us: set --max-host-rate or lower --per-host-concurrency",
    "http_503": "hosts are overloaded or throttling us: set --max-host-rate or lower --per-host-concurrency",
    "http_403": "hosts refuse us: check the user agent and --max-host-rate",
    "private_address": "URLs point into private networks; the address guard refuses them",
    "tls_error": "TLS fails: check the worker's CA certificates and clock",
}


def is_local(runner) -> bool:
    return runner is None or str(getattr(runner, "__name__", runner)).rsplit(".", 1)[-1] in LOCAL_RUNNERS


def abnormal_failures(summary: dict) -> str | None:
    """A warning for a shard summary (count, successes, failed: {reason: n}) whose failure rate is abnormal."""
    count, failed = summary["count"], Counter(summary["failed"])
    n_failed = sum(failed.values())
    if count < MIN_SAMPLES or n_failed <= ABNORMAL_FAILURE_RATE * count:
        return None
    reason, n = failed.most_common(1)[0]
    hint = HINTS.get(reason, "see the reasons in the shard's parquet and in pipeline/fetch.py")
    return (f"shard {summary['shard']:05d}: {n_failed} of {count} samples failed ({n_failed / count:.0%}), "
            f"mostly {reason} ({n}, {n / n_failed:.0%} of the failures): {hint}")


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)  # the reader never sees half a file


class ShardProgress:
    """A shard's counts, written to `folder/{shard}.json` at most every WRITE_EVERY_S and when it ends."""

    def __init__(self, folder: str, shard: int, count: int):
        self.path = os.path.join(folder, f"{shard:05d}.json")
        self.counts = {"shard": shard, "count": count, "done": 0, "successes": 0, "failed": {}, "complete": False}
        self._written = 0.0
        self._write()

    def add(self, row: dict) -> None:
        self.counts["done"] += 1
        if row["status"] == "success":
            self.counts["successes"] += 1
        else:
            failed = self.counts["failed"]
            failed[row["error_message"]] = failed.get(row["error_message"], 0) + 1
        if time.monotonic() - self._written >= WRITE_EVERY_S:
            self._write()

    def finish(self, summary: dict) -> None:
        """The shard is complete (built now, or reused from an earlier run)."""
        self.counts.update(done=summary["count"], successes=summary["successes"], failed=summary["failed"],
                           complete=True)
        self._write()

    def _write(self) -> None:
        self._written = time.monotonic()
        _write_json(self.path, self.counts)


class RecordPlan(beam.PTransform):
    """The candidates kept for the shards -> folder/plan.json with the numbers of shards and samples.
    Counted before the planner (which tiles positions 0..n-1 into shards of samples_per_shard), so the bar
    knows its total while the shards are still being built."""

    def __init__(self, folder: str, samples_per_shard: int):
        super().__init__()
        self.folder, self.samples_per_shard = folder, samples_per_shard

    def expand(self, kept):
        folder, sps = self.folder, self.samples_per_shard
        return (
            kept
            | "Count" >> beam.combiners.Count.Globally()
            | "WritePlan" >> beam.Map(lambda n: _write_json(
                os.path.join(folder, "plan.json"), {"shards": -(-n // sps), "samples": n}))
        )


def read_totals(folder: str) -> dict:
    """What the bar shows: the plan (when known) and the sums over the shards' files."""
    totals = {"shards": None, "samples": None, "shards_done": 0, "done": 0, "successes": 0, "failed": 0,
              "warnings": {}}
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(folder, "plan.json")) as f:
            totals.update(json.load(f))
    for path in glob.glob(os.path.join(folder, "[0-9]*.json")):
        try:
            with open(path) as f:
                shard = json.load(f)
        except (OSError, ValueError):
            continue  # replaced while we read it: counted on the next tick
        totals["shards_done"] += shard["complete"]
        totals["done"] += shard["done"]
        totals["successes"] += shard["successes"]
        totals["failed"] += sum(shard["failed"].values())
        warning = abnormal_failures(shard) if shard["complete"] else None
        if warning:
            totals["warnings"][shard["shard"]] = warning
    return totals


class ProgressBar:
    """The launcher's bar: samples done out of the plan, shards done, images/s and failure rate. Redrawn by a
    thread of the launcher while the runner works, and once more when the run ends."""

    def __init__(self, folder: str, file=None):
        self.folder = folder
        self.out = out = file or sys.stderr
        interactive = hasattr(out, "isatty") and out.isatty()
        # Off a terminal (a log file, CI), a line every 30 s instead of a redraw twice a second.
        self.interval = 0.5 if interactive else 30.0
        self.bar = tqdm(desc="samples", unit="", file=out, mininterval=self.interval, dynamic_ncols=interactive)
        self.started = time.monotonic()
        self._warned = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openwit-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def refresh(self, draw: bool = True) -> dict:
        t = read_totals(self.folder)
        for shard, warning in sorted(t["warnings"].items()):
            if shard not in self._warned:
                self._warned.add(shard)
                tqdm.write(f"WARNING: {warning}", file=self.out)  # above the bar, which is redrawn below
        elapsed = max(time.monotonic() - self.started, 1e-9)
        if t["samples"] is not None and self.bar.total != t["samples"]:
            self.bar.total = t["samples"]
        self.bar.n = t["done"]
        self.bar.set_postfix_str(
            f"shards {t['shards_done']}/{t['shards'] if t['shards'] is not None else '?'}, "
            f"{t['successes'] / elapsed:.0f} img/s, {t['failed'] / max(t['done'], 1):.1%} failed", refresh=False)
        if draw:
            self.bar.refresh()
        return t

    def close(self) -> dict:
        self._stop.set()
        self._thread.join()
        totals = self.refresh(draw=False)
        self.bar.close()  # draws the final state once
        return totals


@contextlib.contextmanager
def local_progress(runner, enabled: bool, file=None):
    """A folder for the shards' progress files and a bar reading it, on local runs; None elsewhere (the
    Dataflow UI shows the Beam counters instead) or when disabled."""
    if not (enabled and is_local(runner)):
        yield None
        return
    folder = tempfile.mkdtemp(prefix="openwit-progress-")
    bar = ProgressBar(folder, file)
    try:
        yield folder
    finally:
        bar.close()
        shutil.rmtree(folder, ignore_errors=True)
