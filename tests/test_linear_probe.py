"""The linear probe (training/linear_probe.py): the paper's C search, splits, few-shot draws, the command."""

import json
import math
import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from openwit import experiment_web
from openwit.cli import main as cli
from training import linear_probe


def blobs(per_class: int, classes: int = 3, spread: float = 0.3, seed: int = 0):
    """Unit-norm features around one axis per class, like CLIP features of easy classes."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array([f"c{i}" for i in range(classes)]), per_class)
    x = np.eye(classes)[np.repeat(np.arange(classes), per_class)] + spread * rng.normal(size=(len(y), classes))
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_c_search_follows_the_paper_grid_then_halves_to_eight_steps_per_decade():
    x, y = blobs(20)
    vx, vy = blobs(10, seed=1)
    best, tried = linear_probe.sweep_c(x, y, vx, vy)
    logs = sorted(round(math.log10(c), 6) for c in tried)
    # 7 grid points (1e-6 .. 1e6 every 2 decades) + 2 per halving at 1, 1/2, 1/4 and 1/8 decade.
    assert {-6, -4, -2, 0, 2, 4, 6} <= set(logs) and len(logs) == 7 + 2 * 4
    assert all(abs(v * 8 - round(v * 8)) < 1e-6 for v in logs)  # on the 1/8-decade lattice
    assert tried[best] == max(tried.values())
    # The final points sit 1/8 decade either side of the best.
    assert round(math.log10(best) - 1 / 8, 6) in logs or round(math.log10(best) + 1 / 8, 6) in logs


def test_ties_go_to_the_lower_validation_loss_not_to_a_vanishing_c():
    # Well separated: every C from 1e-6 up gets 100% validation accuracy; 1e-6 would refit to mush.
    x, y = blobs(20, spread=0.05)
    vx, vy = blobs(5, spread=0.05, seed=1)
    best, tried = linear_probe.sweep_c(x, y, vx, vy)
    assert tried[1e-6] == 1.0 and best >= 1.0
    assert linear_probe.accuracy(linear_probe.fit(x, y, best), vx, vy) == 1.0


def test_validation_split_holds_out_a_share_of_each_class():
    y = np.array(["a"] * 10 + ["b"] * 2 + ["c"])
    train, val = linear_probe.validation_split(y, 0.2, seed=0)
    assert sorted(y[val]) == ["a", "a", "b"]  # 20% of 10; at least one of 2; none of a lone image
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(13))
    assert set(train.tolist()).isdisjoint(val.tolist())
    again, _ = linear_probe.validation_split(y, 0.2, seed=0)
    assert again.tolist() == train.tolist()


def test_few_shot_draws_k_per_class_for_each_seed(monkeypatch):
    x, y = blobs(10)
    tx, ty = blobs(5, seed=2)
    sizes = []
    real_fit = linear_probe.fit

    def counting_fit(features, labels, c, max_iter=1000):
        sizes.append(sorted(labels.tolist()))
        return real_fit(features, labels, c, max_iter)

    monkeypatch.setattr(linear_probe, "fit", counting_fit)
    out = linear_probe.few_shot(x, y, {"t": (tx, ty)}, [1, 2], seeds=3, c=10.0)
    assert sizes[:3] == [["c0", "c1", "c2"]] * 3 and sizes[3:] == [["c0", "c0", "c1", "c1", "c2", "c2"]] * 3
    assert len(out["t"]["1"]["runs"]) == 3 and out["t"]["2"]["mean"] == pytest.approx(np.mean(out["t"]["2"]["runs"]))
    assert out["t"]["2"]["std"] == pytest.approx(np.std(out["t"]["2"]["runs"]))


def test_predictions_rows():
    x, y = blobs(10, spread=0.05)
    model = linear_probe.fit(x, y, 100.0)
    rows = linear_probe.predictions("s", ["i0", "i1"], np.array(["c0", "c1"]), model, np.array([x[0], x[0]]))
    assert [(r["prediction"], r["correct"], r["correct_top5"]) for r in rows] == [
        ("c0", True, True), ("c0", False, True)]  # 3 classes: everything is in the top 5


def test_linear_probe_command_on_a_random_tiny_clip(tmp_path):
    folders = {}
    for split, seed in (("train", 0), ("test", 1)):
        images = experiment_web.labelled_images(random.Random(seed), 3)
        folders[split] = experiment_web.write_image_folders(images, str(tmp_path / split))["shapes"]
    out = tmp_path / "probe"
    assert cli(["linear-probe", "--model", "tiny-ViT", "--train-set", f"shapes={folders['train']}",
                "--eval-set", f"shapes={folders['test']}", "--shots", "1,2", "--seeds", "2",
                "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_items"] == 18 and metrics["C_tried"] == 15
    shapes = metrics["eval_sets"]["shapes"]
    assert shapes["items"] == 18 and shapes["classes"] == 6 and 0 <= shapes["top1"] <= 1
    assert set(shapes["few_shot"]) == {"1", "2"} and len(shapes["few_shot"]["2"]["runs"]) == 2
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    assert len(rows) == 18 and sum(r["correct"] for r in rows) / 18 == pytest.approx(shapes["top1"])


def test_unseen_test_classes_and_bad_shots(tmp_path, capsys):
    images = experiment_web.labelled_images(random.Random(0), 2)
    folders = experiment_web.write_image_folders(images, str(tmp_path))
    base = ["linear-probe", "--model", "tiny-RN", "--train-set", f"s={folders['shapes']}"]
    assert cli(base + ["--eval-set", f"c={folders['colours']}"]) == 2
    assert "classes the training set lacks" in capsys.readouterr().err
    assert cli(base + ["--eval-set", f"s={folders['shapes']}", "--shots", "one"]) == 2
    assert "--shots" in capsys.readouterr().err
