"""The whole pipeline on the demo web: real HTTP on 127.0.0.1, the real Beam runner, real files read back with
independent readers (tarfile, pyarrow, webdataset)."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections import Counter

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from build_helpers import build, load_stats, read_bytes, reject_rows, shard_files, shard_rows
from openwit.options import default_workers
from pipeline.write_shards import stage_of

pytestmark = pytest.mark.timeout(600)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def built(demo_build):
    return demo_build


def test_every_candidate_is_in_a_shard_or_a_reject_and_stats_add_up(built, demo_site):
    stats, rows, rejects = load_stats(built), shard_rows(built), reject_rows(built)
    assert stats["candidates"] == len(demo_site.pairs) == len(rows) + len(rejects)
    successes = [r for r in rows if r["status"] == "success"]
    assert stats["kept"] == len(successes) > 0
    assert stats["candidates"] == stats["kept"] + stats["rejected_total"]
    # Every reason in stats.json is backed by a row in a shard parquet or in rejects/, and vice versa.
    from_files = Counter((r["stage"], r["reason"]) for r in rejects)
    from_files.update((stage_of(r["error_message"]), r["error_message"])
                      for r in rows if r["status"] != "success")
    from_stats = Counter({(stage, reason): n for stage, reasons in stats["rejected"].items()
                          for reason, n in reasons.items()})
    assert from_files == from_stats
    with open(os.path.join(built, "sizes.json")) as f:
        sizes = json.load(f)
    assert sum(sizes.values()) == stats["kept"]


def test_each_attempted_image_ends_with_the_outcome_the_web_dictates(built, demo_site, demo_url):
    rows = {r["url"]: r for r in shard_rows(built)}
    rejected_before_fetch = {r["url"] for r in reject_rows(built)}
    checked = Counter()
    for path, _alt, _page in demo_site.pairs:
        url = demo_url + path
        if url in rejected_before_fetch:
            continue  # its caption or query match kept it from being fetched
        row = rows[url]
        outcome = "success" if row["status"] == "success" else row["error_message"]
        assert outcome == demo_site.expected[path], url
        checked[outcome] += 1
    # The demo web exercises every kind of outcome, so this test sees each of them.
    assert set(checked) == {"success", "http_404", "robots_disallowed", "opted_out", "not_an_image",
                            "decode_error"}


def test_shards_load_with_tarfile_pyarrow_and_webdataset(built):
    rows = {r["key"]: r for r in shard_rows(built) if r["status"] == "success"}
    tar_keys = {}
    for path in shard_files(built, "*.tar"):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                tar_keys.setdefault(key, {})[ext] = tar.extractfile(member).read()
    assert set(tar_keys) == set(rows)
    for key, files in tar_keys.items():
        image_ext = {"jpg", "png", "webp"} & set(files)
        assert len(image_ext) == 1 and {"txt", "json"} <= set(files)
        assert files["txt"].decode() == rows[key]["caption"]
        meta = json.loads(files["json"])
        assert meta["url"] == rows[key]["url"] and meta["key"] == key

    urls = shard_files(built, "*.tar")
    loaded = list(wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg;png;webp", "txt", "__key__"))
    assert len(loaded) == len(rows)
    for image, caption, key in loaded:
        assert image.size == (64, 64)  # --image-size 64 in the default border mode
        assert caption == rows[key]["caption"]


def test_queries_parquet_counts_agree_with_shards(built):
    table = pq.read_table(os.path.join(built, "queries.parquet")).to_pylist()
    kept = Counter(q for r in shard_rows(built) if r["status"] == "success" for q in r["queries"])
    assert {row["query_id"]: row["kept"] for row in table if row["kept"]} == dict(kept)
    assert all(row["candidates"] >= row["selected"] >= row["kept"] for row in table)


def test_rerun_skips_complete_shards_and_redoes_missing_ones(built, demo_inputs, tmp_path):
    output = str(tmp_path / "resume")
    shutil.copytree(built, output)
    data_files = lambda: shard_files(output, "*.tar") + shard_files(output, "*.parquet")  # noqa: E731
    before = read_bytes(data_files())
    mtimes = {p: os.stat(p).st_mtime_ns for p in shard_files(output, "0*")}  # shard files, not sizes.json
    for path in shard_files(output, "00001*"):  # as if the run had crashed while writing shard 1
        os.remove(path)
    with open(os.path.join(output, "shards", "00001.tar.tmp-deadbeef"), "wb") as f:
        f.write(b"half a tar")  # ...leaving a partial file behind
    build(*demo_inputs, output)
    assert read_bytes(data_files()) == before  # _stats.json differs only in its duration
    assert not shard_files(output, "*.tmp-*")
    for path, mtime in mtimes.items():
        if "00001" not in path:
            assert os.stat(path).st_mtime_ns == mtime  # complete shards were not rewritten
    assert load_stats(output) == load_stats(built)


def test_fresh_rerun_and_multiprocess_run_give_byte_identical_shards(built, demo_inputs, tmp_path):
    expected = read_bytes(shard_files(built, "*.tar") + shard_files(built, "*.parquet"))
    again = build(*demo_inputs, tmp_path / "again")
    multi = build(*demo_inputs, tmp_path / "multi", "--direct_running_mode=multi_processing",
                  "--direct_num_workers=2")
    threads = build(*demo_inputs, tmp_path / "threads", "--sample-processes", "0")  # no sample processes
    outcomes = lambda out: {(r["url"], r["status"], r["error_message"]) for r in shard_rows(out)}  # noqa: E731
    for output in (again, multi, threads):
        # Outcomes first, so a difference shows which sample changed rather than which bytes.
        assert outcomes(output) ^ outcomes(built) == set()
        assert read_bytes(shard_files(output, "*.tar") + shard_files(output, "*.parquet")) == expected


@pytest.mark.parametrize("launcher", [
    [sys.executable, "-m", "pipeline.build_wit", "--direct_num_workers=1"],
    [os.path.join(os.path.dirname(sys.executable), "openwit"), "build"],  # the default: openwit.options.default_workers
    [os.path.join(os.path.dirname(sys.executable), "beam"), "run", "pipeline/build_wit.py", "--direct_num_workers=1"],
], ids=["python-m", "openwit-build", "beam-run"])
def test_the_three_ways_to_launch(launcher, demo_site, demo_url, tmp_path):
    import pyarrow as pa
    import pyarrow.csv  # noqa: F401  (registers pa.csv)

    pairs = tmp_path / "pairs.csv"
    pa.csv.write_csv(pa.table({"url": [demo_url + p for p, _, _ in demo_site.pairs[:12]],
                               "caption": [a for _, a, _ in demo_site.pairs[:12]]}), pairs)
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(demo_site.queries))
    output = tmp_path / "out"
    proc = subprocess.run([*launcher, "--pairs", str(pairs), "--queries", str(queries), "--output", str(output),
                           "--allow-private-addresses", "--image-size", "32"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = load_stats(str(output))
    assert stats["candidates"] == 12 and stats["adds_up"]
    # The user is told the totals and where the output is.
    assert f"12 candidates -> {stats['kept']} samples" in proc.stdout and "report.html" in proc.stdout
    # Beam re-checks the command line when the pipeline runs; our options must not look unknown to it.
    assert "Unparseable argument" not in proc.stderr, proc.stderr[-3000:]
    workers = 1 if "--direct_num_workers=1" in launcher else default_workers(os.cpu_count())
    assert ("in this process" if workers == 1 else f"in {workers} worker processes") in proc.stderr
    assert f"{max(1, os.cpu_count() // workers)} sample processes per worker" in proc.stderr


def test_local_build_starts_a_worker_process_per_two_cores():
    # A worker's decode thread pool keeps ~2 cores busy and each worker process costs seconds to start, so a
    # 2-core machine builds in the launching process (faster and cheaper there, bench/RESULTS.md).
    assert [default_workers(cores) for cores in (1, 2, 3, 4, 16)] == [1, 1, 2, 2, 8]
