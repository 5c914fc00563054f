"""`openwit experiment` end to end at a toy scale: every step runs and the summary agrees with the steps.

Learning itself is measured at full scale (bench/RESULTS.md, "Experiment"); this run is too short to learn."""

import json
import os
import socket

import pyarrow.parquet as pq

from openwit.cli import main as cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_experiment(out, port):
    assert cli(["experiment", "--output", str(out), "--pictures", "60", "--eval-per-class", "2",
                "--probe-per-class", "2", "--leak-fraction", "0.25", "--epochs", "1", "--batch-size", "16",
                "--no-linear-probe", "--port", str(port)]) == 0


def test_experiment_runs_every_step_and_the_overlap_report_finds_the_leaks(tmp_path):
    out = tmp_path / "exp"
    port = free_port()
    run_experiment(out, port)
    summary = json.loads((out / "experiment.json").read_text())
    stats = json.loads((out / "build" / "stats.json").read_text())
    assert summary["pictures"] == 60 + 7 and summary["leaked"] == 7  # 25% of 28 eval images
    assert stats["adds_up"] and stats["kept"] == summary["kept"] > 0
    assert os.listdir(out / "train") and any(f.endswith(".pt") for f in os.listdir(out / "train"))

    report = {r["eval_set"]: r for r in json.loads((out / "overlap_report" / "report.json").read_text())["eval_sets"]}
    leaked = {}
    for key in json.loads((out / "leaked.json").read_text()):
        eval_set, eval_id = key.split("/", 1)
        leaked.setdefault(eval_set, set()).add(eval_id)
    for name, r in report.items():
        rows = pq.read_table(out / "zeroshot" / name / "predictions.parquet").to_pylist()
        assert r["n_all"] == len(rows) == (16 if name == "colours" else 12)
        zs = summary["eval_sets"][name]
        records = out / "build" / "overlap" / f"{name}.parquet"  # absent when nothing of the set matched
        found = {row["eval_id"] for row in pq.read_table(records).to_pylist()} if records.exists() else set()
        assert leaked.get(name, set()) <= found  # every leaked copy was detected ...
        assert zs["leaked"] == zs["leaks_detected"] == len(leaked.get(name, ()))
        assert zs["false_detections"] == len(found - leaked.get(name, set()))
        assert r["n_overlap"] == len(found)  # ... and the report's Overlap split is what the build recorded
        assert r["correct_all"] == sum(row["correct"] for row in rows)
        assert zs["zeroshot_top1"] == r["acc_all"] and zs["overlap"]["n_overlap"] == r["n_overlap"]
    assert sum(len(ids) for ids in leaked.values()) == 7
    assert "../overlap_report/report.md" in (out / "build" / "report.html").read_text()
    assert "| colours | 12.5% |" in (out / "experiment.md").read_text()

    # Deterministic for a seed: a second run gives the same shards, training and predictions, byte for byte.
    run_experiment(tmp_path / "again", port)
    for part in ("build/shards/00000.tar", "train/metrics.jsonl", "zeroshot/colours/predictions.parquet"):
        if part.endswith(".jsonl"):  # each line also carries its samples/s
            first, second = ([{k: v for k, v in json.loads(line).items() if k != "samples_per_s"}
                              for line in (root / part).read_text().splitlines()] for root in (out, tmp_path / "again"))
        else:
            first, second = (out / part).read_bytes(), (tmp_path / "again" / part).read_bytes()
        assert first == second, part
