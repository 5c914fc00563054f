"""The dataset card's numbers and HTML, on small output folders written by hand, so every figure is known."""

import html
import io
import json
import os
import re
import subprocess
import sys
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dedup.overlap import overlap_table
from openwit import cli
from pipeline import aggregates, report
from pipeline.chart_worker import CHARTS, ChartProcess
from pipeline.write_shards import PARQUET_SCHEMA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)> $\\frac{1}{2}$ & co'


def _row(key, url, caption, queries, ok=True, size=(64, 48), original=(640, 480), reason="http_404"):
    return {"key": key, "url": url, "caption": caption, "status": "success" if ok else "failed",
            "error_message": None if ok else reason, "width": size[0] if ok else None,
            "height": size[1] if ok else None, "original_width": original[0] if ok else None,
            "original_height": original[1] if ok else None, "sha256": None, "phash": None, "queries": queries,
            "page_url": "", "eval_matches": []}


def write_folder(out, shards: dict[int, list[dict]], queries: list[tuple[str, int, int, int]], stats=None,
                 overlaps=None, images=True):
    """An output folder as a build leaves it: stats.json, queries.parquet, shard parquets and tars."""
    os.makedirs(out / "shards", exist_ok=True)
    kept = sum(r["status"] == "success" for rows in shards.values() for r in rows)
    stats = stats or {"candidates": kept + 5, "kept": kept, "rejected_total": 5, "adds_up": True,
                      "rejected": {"caption": {"empty": 2}, "fetch": {"http_404": 3}}, "shards": len(shards)}
    (out / "stats.json").write_text(json.dumps(stats))
    pq.write_table(pa.table({
        "query_id": pa.array(range(len(queries)), pa.int32()), "query": [q[0] for q in queries],
        "candidates": pa.array([q[1] for q in queries], pa.int64()),
        "selected": pa.array([q[2] for q in queries], pa.int64()),
        "kept": pa.array([q[3] for q in queries], pa.int64())}), out / "queries.parquet")
    for shard, rows in shards.items():
        pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA), out / "shards" / f"{shard:05d}.parquet")
        if images:
            with tarfile.open(out / "shards" / f"{shard:05d}.tar", "w") as tar:
                for r in rows:
                    if r["status"] == "success":
                        buffer = io.BytesIO()
                        Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "JPEG")
                        info = tarfile.TarInfo(f"{r['key']}.jpg")
                        info.size = buffer.tell()
                        tar.addfile(info, io.BytesIO(buffer.getvalue()))
    for name, rows in (overlaps or {}).items():
        os.makedirs(out / "overlap", exist_ok=True)
        pq.write_table(overlap_table(rows), out / "overlap" / f"{name}.parquet")
    return str(out)


@pytest.fixture()
def small(tmp_path):
    rows = {
        0: [_row("000000000", "https://Img.Example.com:8443/a.jpg", "a red car", [0]),
            _row("000000001", "https://user@img.example.com/b.jpg", "a red bus on a road", [0, 1]),
            _row("000000002", "https://img.example.com/c.jpg", "lost", [1], ok=False)],
        1: [_row("000010000", "http://other.org/d.png", HOSTILE, [2], size=(32, 32), original=(3000, 20)),
            _row("000010001", "javascript:alert(3)", "never fetched", [2], ok=False, reason="bad_url"),
            {**_row("000010002", "http://other.org/e.png", "an eval image", [2], original=(500, 400)),
             "status": "failed", "error_message": "eval_duplicate"}],  # resized, then dropped: never written
    }
    queries = [("red", 30, 20, 2), ("bus", 2, 2, 1), ("<b>hostile</b>", 1, 1, 1), ("never", 0, 0, 0),
               ("no sample", 4, 4, 0)]
    return write_folder(tmp_path, rows, queries, overlaps={"cifar<10>": [
        {"eval_set": "cifar<10>", "eval_id": "7", "sample_key": "000000000", "url": "u", "method": "phash",
         "distance": 2.0},
        {"eval_set": "cifar<10>", "eval_id": "7", "sample_key": "000000001", "url": "u", "method": "caption",
         "distance": 0.1},
        {"eval_set": "cifar<10>", "eval_id": "9", "sample_key": "000000001", "url": "u", "method": "phash",
         "distance": 4.0}]})


def test_aggregates_count_what_the_folder_holds(small):
    agg = aggregates.compute(small, t=20)
    assert agg["funnel"] == [["candidates", 8], ["caption", 6], ["match", 6], ["dedup", 6], ["balance", 6],
                             ["fetch", 3], ["image", 3], ["decontaminate", 3], ["kept", 3]]
    q = agg["queries"]
    assert (q["queries"], q["matched"], q["at_t"], q["without_sample"], q["never_matched"]) == (5, 4, 1, 1, 1)
    assert [r["query"] for r in q["head"]] == ["red", "no sample", "bus", "<b>hostile</b>"]
    assert [r["query"] for r in q["tail"]] == ["<b>hostile</b>", "bus", "no sample", "red"]
    assert q["before"] == [[1, 30], [2, 4], [3, 2], [4, 1]] and q["kept"] == [[1, 2], [2, 1], [3, 1]]
    # Hosts: lower-cased, without port or user; failures counted per host; a non-web URL has no host.
    hosts = {h["host"]: (h["attempted"], h["failed"]) for h in agg["hosts"]["top"]}
    assert hosts == {"img.example.com": (3, 1), "other.org": (2, 1), "(no host)": (1, 1)}
    sides = agg["image_sides"]
    edges = sides["edges"]
    bin_of = lambda v: int(np.searchsorted(edges, v, side="right")) - 1  # noqa: E731
    assert sides["width"][bin_of(64)] == 2 and sides["width"][bin_of(32)] == 1 and sum(sides["width"]) == 3
    assert sides["original_width"][bin_of(3000)] == 1 and sides["original_height"][bin_of(20)] == 1
    assert sum(sides["original_width"]) == 4 and sum(sides["height"]) == 3
    chars = agg["caption_chars"]
    assert sum(chars["counts"]) == 3 and chars["counts"][len("a red car") // 10] >= 1
    assert agg["languages"]["sample"] == 3 and sum(agg["languages"]["counts"].values()) == 3
    assert agg["decontamination"] == [{"eval_set": "cifar<10>", "eval_items_matched": 2, "samples_matched": 2,
                                       "samples_by_method": {"caption": 1, "phash": 2}}]
    # One thumbnail per query with a kept sample, each showing a sample of its query.
    assert sorted(s["query"] for s in agg["thumbnails"]) == ["<b>hostile</b>", "bus", "red"]


def test_per_query_curves_stay_small_for_half_a_million_queries(tmp_path):
    counts = np.random.default_rng(0).zipf(1.5, 500_000).clip(max=10**6)
    out = tmp_path / "big"
    out.mkdir()
    write_folder(out, {}, [], stats={"candidates": 0, "kept": 0, "rejected_total": 0, "adds_up": True,
                                     "rejected": {}, "shards": 0})
    pq.write_table(pa.table({"query_id": pa.array(range(len(counts)), pa.int32()),
                             "query": [f"q{i}" for i in range(len(counts))], "candidates": counts,
                             "selected": np.minimum(counts, 1000), "kept": np.minimum(counts, 900)}),
                   out / "queries.parquet")
    q = aggregates.query_distribution(str(out), 1000)
    assert len(q["before"]) <= aggregates.CURVE_POINTS and q["before"][0] == [1, int(counts.max())]
    assert q["before"][-1] == [len(counts), int(counts.min())]
    assert q["at_t"] == int((counts > 1000).sum()) and max(c for _, c in q["after"]) == 1000


def test_hostile_strings_are_escaped_and_no_script_is_written(small):
    report.write_report(small, t=20)
    page = open(os.path.join(small, "report.html"), encoding="utf-8").read()
    assert "<script" not in page.lower() and "onerror=" not in page.replace("onerror=alert(2)&gt;", "")
    assert html.escape(HOSTILE, quote=True) in page  # the caption, as text
    assert "&lt;b&gt;hostile&lt;/b&gt;" in page and "cifar&lt;10&gt;" in page
    assert 'href="javascript:' not in page.lower()  # a non-web URL is never a link
    assert "Content-Security-Policy" in page
    # Self-contained: every image is inline, and the only links are the overlap reports beside the card.
    assert not re.findall(r'src="(?!data:)', page)
    assert len(re.findall(r'<img class="chart"', page)) == 7


def test_the_card_is_the_same_for_the_same_build_and_links_the_overlap_report(small):
    (open(os.path.join(small, "overlap", "report.html"), "w")).write("<p>overlap</p>")
    report.write_report(small, t=20)
    first = open(os.path.join(small, "report.html"), "rb").read()
    report.write_report(small, t=20)
    assert open(os.path.join(small, "report.html"), "rb").read() == first
    assert b'<a href="overlap/report.html">' in first
    # `openwit overlap` links its report between these marks without redrawing the card.
    assert first.count(b"<!--overlap-report-->") == 1 and first.count(b"<!--/overlap-report-->") == 1


def test_charts_drawn_by_a_chart_process_give_the_same_card_byte_for_byte(small):
    # The build draws its card's charts in a process started when it starts (pipeline/chart_worker.py).
    report.write_report(small, t=20)
    here = [open(os.path.join(small, name), "rb").read() for name in ("report.html", "aggregates.json")]
    with ChartProcess() as charts:
        report.write_report(small, t=20, chart_process=charts)
        assert all(charts.result(name) for name in CHARTS)  # drawn there, not here
    assert [open(os.path.join(small, name), "rb").read() for name in ("report.html", "aggregates.json")] == here
    # A process that is gone (killed, or never started): the report draws its charts itself.
    charts = ChartProcess()
    charts._proc.kill()
    report.write_report(small, t=20, chart_process=charts)
    charts.close()
    assert open(os.path.join(small, "report.html"), "rb").read() == here[0]


def test_a_chart_the_process_fails_to_draw_is_drawn_in_the_report_and_fails_there(small):
    with ChartProcess() as charts:
        charts.submit("hosts", [{"host": "h"}])  # no "attempted": KeyError in charts.hosts
        assert charts.result("hosts") is None
        agg = aggregates.compute(small, t=20)
        agg["hosts"]["top"] = [{"host": "h"}]
        with pytest.raises(KeyError):
            report.draw_charts(agg, {"hosts": charts.result("hosts")})


def test_openwit_report_redraws_from_the_folder_keeping_t(small, capsys):
    assert cli.main(["report", small, "--max-per-query", "20"]) == 0
    os.remove(os.path.join(small, "report.html"))
    assert cli.main(["report", small]) == 0  # t comes from the aggregates the last report wrote
    out = capsys.readouterr().out
    assert "queries at t: 1 of 4 matched queries had more than t = 20 candidates" in out
    assert "top reject:   fetch/http_404: 3" in out and "report.html" in out
    assert json.load(open(os.path.join(small, "aggregates.json")))["queries"]["t"] == 20
    assert os.path.exists(os.path.join(small, "report.html"))


def test_openwit_report_on_a_folder_without_a_build_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "no stats.json" in capsys.readouterr().err


def _many_shards(tmp_path, n_shards, rows_per_shard, hosts_per_shard):
    shards = {}
    for s in range(n_shards):
        shards[s] = [_row(f"{s:05d}{i:04d}", f"https://h{s}-{i % hosts_per_shard}.example/{i}.jpg" if i % 10
                          else f"https://big.example/{s}/{i}.jpg", f"caption {i} of shard {s} " * 3, [i % 50],
                          ok=i % 7 != 0) for i in range(rows_per_shard)]
    queries = [(f"q{i}", 100, 100, 90) for i in range(50)]
    return write_folder(tmp_path, shards, queries, images=False)


MEASURE = """
import json, sys
import pyarrow as pa
from pipeline import aggregates
aggregates.HOST_CAPACITY, aggregates.BATCH_ROWS, aggregates.SCAN_THREADS = 200, 2_000, 2
agg = aggregates.compute(sys.argv[1], t=20)
print(json.dumps({"peak": pa.default_memory_pool().max_memory(), "hosts": agg["hosts"],
                  "thumbnails": len(agg["thumbnails"]), "sample": agg["languages"]["sample"]}))
"""


def test_memory_does_not_grow_with_the_build(tmp_path):
    """Arrow's peak allocation (in a fresh process) is a few shards' worth, whatever the number of shards; the
    host table is capped and keeps the large hosts exact."""
    peaks = []
    for n_shards in (4, 16):
        out = _many_shards(tmp_path / f"n{n_shards}", n_shards, 6_000, 300)
        proc = subprocess.run([sys.executable, "-c", MEASURE, out], capture_output=True, text=True, timeout=300,
                              cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        found = json.loads(proc.stdout.strip().splitlines()[-1])
        peaks.append(found["peak"])
        assert found["hosts"]["pruned"] and found["hosts"]["tracked"] <= 200
        big = found["hosts"]["top"][0]
        assert big["host"] == "big.example" and big["attempted"] == n_shards * 600
        assert found["thumbnails"] <= aggregates.THUMBNAILS
        assert found["sample"] <= aggregates.LANGUAGE_SAMPLE + n_shards
    # Reading all 16 shards at once would take 4x the 4-shard peak.
    assert peaks[1] <= peaks[0] * 1.5 + (1 << 20), peaks


def test_a_build_that_kept_nothing_still_gets_a_card(tmp_path):
    out = write_folder(tmp_path, {}, [("red", 0, 0, 0)], stats={
        "candidates": 2, "kept": 0, "rejected_total": 2, "adds_up": True, "rejected": {"match": {"no_query_match": 2}},
        "shards": 0})
    agg = report.write_report(out, t=None)
    page = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    assert agg["queries"]["at_t"] is None and "No kept samples" in page and len(re.findall('class="chart"', page)) == 7
    assert "queries at t: unknown" in report.summary(out, agg)
