"""Sample processes (pipeline/sample_processes.py): the shard writer's per-sample work in child processes gives
the same shard as its threads, survives a child that dies, and leaves no process behind."""

import pyarrow.parquet as pq
import pytest

from openwit.options import default_sample_processes
from pipeline import fetch, resize
from pipeline.build_wit import parse_options
from pipeline.plan_shards import sample_key
from pipeline.sample_processes import DECODER_CRASHED
from pipeline.write_shards import ShardBuilder, ShardConfig, stage_of

pytestmark = pytest.mark.timeout(300)


def candidates(demo_site, demo_url, shard, n):
    paths = list(demo_site.expected)[:n]
    return [{"url": demo_url + p, "caption": f"caption {i}", "queries": [i % 3], "page_url": "",
             "source": "test", "index": i, "key": sample_key(shard, i, 10000)} for i, p in enumerate(paths)]


def build(output, items, shard=0, **config):
    builder = ShardBuilder(ShardConfig(output=str(output), image=resize.ImageOptions(image_size=48),
                                       fetch=fetch.FetchOptions(allow_private_addresses=True), **config))
    try:
        summary = builder.build(shard, items)
        return summary, [child.process for child in builder.processes.children] if builder.processes else []
    finally:
        builder.close()


def shard_bytes(output, shard=0):
    return [(output / "shards" / f"{shard:05d}{suffix}").read_bytes() for suffix in (".tar", ".parquet")]


def test_processes_write_the_same_shard_as_threads(demo_site, demo_url, tmp_path):
    items = candidates(demo_site, demo_url, 0, 40)
    threads, _ = build(tmp_path / "threads", items, threads=2)
    processes, children = build(tmp_path / "processes", items, processes=2)
    assert processes["successes"] == threads["successes"] > 20 and processes["failed"] == threads["failed"]
    assert shard_bytes(tmp_path / "processes") == shard_bytes(tmp_path / "threads")
    # Both children were started, and closing the worker ended them.
    assert len(children) == 2 and all(p.returncode == 0 for p in children)


def test_a_dead_sample_process_costs_only_the_sample_it_was_making(demo_site, demo_url, tmp_path, monkeypatch):
    # The child is killed as it starts its 5th sample (as a segfault in a decoder would end it); the samples
    # queued behind that one go to a new child, so every other sample is made and written as without the crash.
    monkeypatch.setenv("OPENWIT_FAULTS", "sample_process@5")
    monkeypatch.setenv("OPENWIT_FAULTS_DIR", str(tmp_path))
    items = candidates(demo_site, demo_url, 3, 40)
    undisturbed, _ = build(tmp_path / "threads", items, shard=3, threads=2)
    summary, children = build(tmp_path / "processes", items, shard=3, processes=1)
    assert (tmp_path / "fired-sample_process").exists()
    assert summary["count"] == len(items) and summary["failed"][DECODER_CRASHED] == 1
    assert summary["successes"] == undisturbed["successes"] - 1
    assert stage_of(DECODER_CRASHED) == "image"
    rows = pq.read_table(tmp_path / "processes" / "shards" / "00003.parquet").to_pylist()
    crashed = [r for r in rows if r["error_message"] == DECODER_CRASHED]
    assert "exit status -9" in crashed[0]["error_detail"]
    others = {r["key"]: r for r in pq.read_table(tmp_path / "threads" / "shards" / "00003.parquet").to_pylist()}
    assert [r for r in rows if r is not crashed[0]] == [others[r["key"]] for r in rows if r is not crashed[0]]
    assert len(children) == 1 and children[0].returncode == 0  # the replacement, closed normally


def test_a_child_that_cannot_start_fails_the_shard_with_a_clear_error(demo_site, demo_url, tmp_path):
    config = ShardConfig(output=str(tmp_path), image=resize.ImageOptions(image_size=48),
                         fetch=fetch.FetchOptions(allow_private_addresses=True), processes=2,
                         eval_index=str(tmp_path / "missing.npz"))
    builder = ShardBuilder(config)
    try:
        with pytest.raises(RuntimeError, match="sample process exited with status 1 before it was ready"):
            builder.build(0, candidates(demo_site, demo_url, 0, 10))
    finally:
        builder.close()
    assert not (tmp_path / "shards" / "00000.tar").exists()  # nothing half-written under a final name


@pytest.mark.parametrize("args, expected", [
    ([], lambda cores: cores),  # locally one worker on this 2-core machine (default_workers): a process per core
    (["--direct_num_workers=2"], lambda cores: max(1, cores // 2)),
    (["--sample-processes", "0"], lambda cores: 0),
    (["--runner", "PortableRunner", "--job_endpoint", "localhost:1"], lambda cores: 0),
], ids=["local", "two-workers", "threads", "portable"])
def test_local_runs_use_a_sample_process_per_core_and_remote_workers_none(args, expected, tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    o = parse_options(["--pairs", "p.csv", "--queries", "q.txt", "--output", str(tmp_path), *args])
    assert o.sample_processes == expected(2)
    if "--sample-processes" not in args:
        assert default_sample_processes(o) == expected(2)
