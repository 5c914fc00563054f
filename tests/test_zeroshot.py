"""Zero-shot classification and retrieval (training/zeroshot.py): the maths by hand, the command on a random
tiny CLIP and on a checkpoint in the trainer's format."""

import io
import json
import math
import os
import random
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dedup.eval_sets import read_eval_set
from openwit import experiment_web
from openwit.cli import main as cli
from training import zeroshot
from training.features import EvalSet


def test_ensemble_is_the_renormalised_mean_of_normalised_template_embeddings(monkeypatch):
    # Class "a": templates embed to (3, 0) and (0, 1) -> normalised (1, 0), (0, 1) -> mean (.5, .5) -> (.707, .707).
    # Class "b": (0, 2) twice -> (0, 1).
    vectors = {"x a": [3.0, 0.0], "y a": [0.0, 1.0], "x b": [0.0, 2.0], "y b": [0.0, 2.0]}

    def fake_text_features(model, tokenizer, texts, device="cpu"):
        v = torch.tensor([vectors[t] for t in texts])
        return v / v.norm(dim=-1, keepdim=True)

    monkeypatch.setattr(zeroshot, "text_features", fake_text_features)
    w = zeroshot.zero_shot_classifier(None, None, ["a", "b"], ["x {}", "y {}"])
    assert torch.allclose(w, torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, 1.0]]))


def test_classify_top1_top5():
    es = EvalSet("s", ids=["i0", "i1", "i2"], labels=["c0", "c1", "c6"], captions=[(), (), ()])
    classes = [f"c{i}" for i in range(7)]
    classifier = np.eye(7)
    # i0 scores c0 highest (right); i1 ranks c1 second (top-5 only); i2 ranks c6 last of 7 (neither).
    feats = np.array([[1.0, 0.5, 0, 0, 0, 0, 0],
                      [0.9, 0.8, 0, 0, 0, 0, 0],
                      [0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]])
    rows, m = zeroshot.classify(es, feats, classifier, classes)
    assert [(r["prediction"], r["correct"], r["correct_top5"]) for r in rows] == [
        ("c0", True, True), ("c0", False, True), ("c0", False, False)]
    assert m["top1"] == pytest.approx(1 / 3) and m["top5"] == pytest.approx(2 / 3)
    assert m["chance"] == pytest.approx(1 / 7)


def test_retrieval_recall_by_hand():
    # Images 0, 1, 2; texts t0, t1 of image 0 and t2 of image 1, t3 of image 2.
    image = np.eye(3)
    text = np.array([[0.2, 0.9, 0.0],   # t0 (image 0): image 1 scores higher -> text->image rank 1
                     [0.5, 0.1, 0.0],   # t1 (image 0): image 0 best -> rank 0
                     [0.0, 0.3, 0.9],   # t2 (image 1): image 2 higher -> rank 1
                     [0.0, 0.0, 0.8]])  # t3 (image 2): rank 0
    r = zeroshot.retrieval(image, text, [0, 0, 1, 2], ks=(1, 2))
    # text->image ranks 1, 0, 1, 0: R@1 = 2/4, R@2 = 4/4.
    assert r["text_to_image_R@1"] == 0.5 and r["text_to_image_R@2"] == 1.0
    # image 0: scores t0 .2, t1 .5, t2 0, t3 0 -> best own t1 at rank 0. image 1: t0 .9 > t2 .3 -> rank 1.
    # image 2: t2 .9 > t3 .8 -> rank 1. R@1 = 1/3, R@2 = 3/3.
    assert r["image_to_text_R@1"] == pytest.approx(1 / 3) and r["image_to_text_R@2"] == 1.0


def test_template_sets():
    imagenet = zeroshot.load_templates("imagenet")
    assert len(imagenet) == 80 == len(set(imagenet)) and imagenet[0] == "a bad photo of a {}."
    assert len(zeroshot.load_templates("cifar")) == 18
    assert zeroshot.load_templates("one") == ["a photo of a {}."]
    # The experiment's ensembles run over the other attribute of the experiment web's pictures.
    assert zeroshot.load_templates("experiment-colours") == [f"a photo of a {{}} {s}" for s in experiment_web.SHAPES]
    assert zeroshot.load_templates("experiment-shapes") == [
        f"a photo of a {c} {{}}" for c in experiment_web.COLOURS]


def _image_folder(tmp_path) -> str:
    images = experiment_web.labelled_images(random.Random(0), 2)
    return experiment_web.write_image_folders(images, str(tmp_path / "eval"))["colours"]


def _caption_tar(tmp_path, folder) -> str:
    path = str(tmp_path / "coco.tar")
    with tarfile.open(path, "w") as tar:
        for n, label in enumerate(sorted(os.listdir(folder))[:3]):
            name = sorted(os.listdir(os.path.join(folder, label)))[0]
            for ext, data in (("png", open(os.path.join(folder, label, name), "rb").read()),
                              ("txt", f"a {label} shape\na drawing in {label}".encode())):
                info = tarfile.TarInfo(f"{n:04d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_zeroshot_command_on_a_random_tiny_clip(tmp_path, capsys):
    folder = _image_folder(tmp_path)
    out = tmp_path / "zs"
    (tmp_path / "t.txt").write_text("# two templates\na {} thing.\n\nthe {}.\n")
    assert cli(["zeroshot", "--model", "tiny-ViT", "--eval-set", f"colours={folder}",
                "--eval-set", f"coco={_caption_tar(tmp_path, folder)}", "--templates", str(tmp_path / "t.txt"),
                "--output", str(out)]) == 0
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    assert list(rows[0]) == list(zeroshot.PREDICTION_COLUMNS)
    # Same ids as the eval index's loader, every labelled item once.
    assert [r["eval_id"] for r in rows] == [i.eval_id for i in read_eval_set(folder)]
    assert all(r["correct"] == (r["label"] == r["prediction"]) for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())["eval_sets"]
    assert metrics["colours"]["templates"] == 2 and metrics["colours"]["classes"] == 8
    assert 0 <= metrics["colours"]["top1"] <= metrics["colours"]["top5"] <= 1
    retrieval = metrics["coco"]["retrieval"]
    assert metrics["coco"]["captions"] == 6 and "top1" not in metrics["coco"]
    # 3 images: R@5 and R@10 find everything text->image.
    assert retrieval["text_to_image_R@5"] == 1.0 and retrieval["image_to_text_R@10"] == 1.0


def test_zeroshot_reads_a_checkpoint_of_the_trainer(tmp_path):
    import encoders
    from training import checkpoint

    torch.manual_seed(0)
    model = encoders.create("tiny-RN")
    path = str(tmp_path / "epoch_1_step_1.pt")
    checkpoint.save(path, {"model_name": "tiny-RN", "model_overrides": {}, "state_dict": model.state_dict(),
                           "tokenizer": None, "epoch": 1, "step": 1})
    folder = _image_folder(tmp_path)
    assert cli(["zeroshot", "--checkpoint", path, "--eval-set", f"colours={folder}", "--templates", "one",
                "--output", str(tmp_path / "zs")]) == 0
    assert pq.read_table(tmp_path / "zs" / "predictions.parquet").num_rows == 16


@pytest.mark.parametrize("argv, message", [
    (["--eval-set", "x=/nonexistent", "--model", "tiny-RN"], "does not exist"),
    (["--eval-set", "x=.", "--templates", "nope"], "--checkpoint"),
    (["--eval-set", "x=.", "--model", "tiny-RN", "--templates", "nope"], "no bundled set"),
])
def test_bad_input_exits_2(argv, message, capsys):
    assert cli(["zeroshot", *argv]) == 2
    assert message in capsys.readouterr().err


def test_template_without_placeholder(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("a photo\n")
    assert cli(["zeroshot", "--model", "tiny-RN", "--eval-set", "x=.", "--templates", str(tmp_path / "t.txt")]) == 2
    assert "exactly one {}" in capsys.readouterr().err
