"""Progress and operations: the local progress bar (fed by the shards' progress files), Beam counters per stage
and reason, and the warning for a shard whose failures are abnormal."""

import asyncio
import io
import logging

import apache_beam as beam
import pytest
from aiohttp import web
from apache_beam.metrics.metric import MetricsFilter

from build_helpers import load_stats
from fetch_helpers import serve
from pipeline import build_wit, fetch, progress, resize
from pipeline.write_shards import ShardBuilder, ShardConfig, stage_of

pytestmark = pytest.mark.timeout(300)


def test_abnormal_failure_rate_names_the_dominant_reason_and_a_remedy():
    summary = {"shard": 3, "count": 100, "successes": 10, "failed": {"dns_error": 75, "http_404": 15}}
    warning = progress.abnormal_failures(summary)
    assert warning.startswith("shard 00003: 90 of 100 samples failed (90%), mostly dns_error (75")
    assert "--dns-servers" in warning
    assert progress.abnormal_failures({**summary, "successes": 60, "failed": {"http_404": 40}}) is None
    assert progress.abnormal_failures({**summary, "count": 5, "successes": 0, "failed": {"timeout": 5}}) is None


def test_only_local_runners_get_a_bar():
    assert progress.is_local(None) and progress.is_local("FnApiRunner") and progress.is_local("DirectRunner")
    assert not progress.is_local("DataflowRunner") and not progress.is_local("PortableRunner")


def test_bar_sums_the_shard_files_and_the_plan(tmp_path):
    folder = str(tmp_path)
    out = io.StringIO()
    bar = progress.ProgressBar(folder, file=out)
    one = progress.ShardProgress(folder, 0, 3)
    for status, reason in [("success", None), ("failed", "timeout"), ("success", None)]:
        one.add({"status": status, "error_message": reason})
    one.finish({"count": 3, "successes": 2, "failed": {"timeout": 1}})
    two = progress.ShardProgress(folder, 1, 2)
    two.add({"status": "success", "error_message": None})
    two._write()  # what the next tick of the shard writes
    bad = progress.ShardProgress(folder, 2, 10)
    bad.finish({"count": 10, "successes": 1, "failed": {"dns_error": 8, "timeout": 1}})
    progress._write_json(f"{folder}/plan.json", {"shards": 3, "samples": 15})
    totals = bar.close()
    warning = "shard 00002: 9 of 10 samples failed (90%), mostly dns_error (8, 89% of the failures)"
    assert totals == {"shards": 3, "samples": 15, "shards_done": 2, "done": 14, "successes": 4, "failed": 10,
                      "warnings": {2: warning + ": " + progress.HINTS["dns_error"]}}
    text = out.getvalue()
    last = text.rsplit("\r", 1)[-1]
    assert "14/15" in last and "shards 2/3" in last and "71.4% failed" in last and "img/s" in last
    assert text.count("WARNING: " + warning) == 1  # printed once, above the bar


def test_a_shard_that_mostly_fails_is_warned_about(tmp_path, caplog):
    async def gone(request):
        raise web.HTTPNotFound()

    async def main():
        async with serve({"/{name}": gone}) as base:
            candidates = [{"url": f"{base}/{i}.jpg", "caption": "c", "queries": [0], "page_url": "", "source": "t",
                           "index": i, "key": f"00004{i:04d}"} for i in range(12)]
            # No progress folder, as on Dataflow: the worker logs the warning itself.
            config = ShardConfig(output=str(tmp_path), image=resize.ImageOptions(image_size=32),
                                 fetch=fetch.FetchOptions(allow_private_addresses=True, timeout_s=5))
            builder = ShardBuilder(config)
            try:
                return await asyncio.get_running_loop().run_in_executor(None, builder.build, 4, candidates)
            finally:
                builder.close()

    with caplog.at_level(logging.WARNING):
        summary = asyncio.run(main())
    assert summary["failed"] == {"http_404": 12}
    assert any("shard 00004: 12 of 12 samples failed" in r.message and "mostly http_404" in r.message
               for r in caplog.records)


def test_build_counts_per_stage_and_reason_in_beam_metrics_and_feeds_the_bar(demo_inputs, tmp_path):
    pairs, queries = demo_inputs
    o = build_wit.parse_options(["--pairs", pairs, "--queries", queries, "--output", str(tmp_path / "ds"),
                                 "--samples-per-shard", "40", "--allow-private-addresses", "--image-size", "32"])
    build_wit.check_options(o)
    folder = tmp_path / "progress"
    folder.mkdir()
    p = beam.Pipeline(options=o)
    build_wit.build_pipeline(p, o, str(folder))
    result = p.run()
    result.wait_until_finish()

    stats = load_stats(o.output)
    counters = {(c.key.metric.namespace, c.key.metric.name): c.committed
                for c in result.metrics().query(MetricsFilter())["counters"]}
    # Every reason of stats.json, whether a reject before the shards or a failure inside one, is a counter.
    for stage, reasons in stats["rejected"].items():
        for reason, n in reasons.items():
            assert counters[(stage, reason)] == n, (stage, reason)
    assert any(stage_of(reason) == "fetch" for _, reason in counters)  # the demo web has broken links
    totals = progress.read_totals(str(folder))
    assert totals["shards"] == totals["shards_done"] == stats["shards"]
    assert totals["successes"] == stats["kept"] and totals["done"] == totals["samples"]


def test_build_shows_the_bar_on_local_runs_unless_silenced(demo_inputs, tmp_path, capsys, monkeypatch):
    seen = []
    real = progress.local_progress

    def spy(runner, enabled, file=None):
        seen.append(enabled and progress.is_local(runner))
        return real(runner, enabled, file)

    monkeypatch.setattr(progress, "local_progress", spy)
    pairs, queries = demo_inputs
    argv = ["--pairs", pairs, "--queries", queries, "--output", str(tmp_path / "ds"), "--samples-per-shard",
            "400", "--allow-private-addresses", "--image-size", "32"]
    assert build_wit.main(argv) == 0
    err = capsys.readouterr().err
    assert "samples" in err and "img/s" in err and "failed" in err
    assert build_wit.main(argv + ["--no-progress"]) == 0  # a rerun: every shard reused
    assert "img/s" not in capsys.readouterr().err
    assert seen == [True, False]
