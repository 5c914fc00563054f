"""The overlap report (dedup/overlap_report.py) against numbers worked by hand.

Binomial tail and Clopper-Pearson bounds used below, for n trials at 99.5% (alpha/2 = 0.0025):
- k = n: lower bound solves p^n = 0.0025, so p = 0.0025^(1/n); upper bound 1.
- k = 0: lower bound 0; upper bound solves (1-p)^n = 0.0025, so p = 1 - 0.0025^(1/n).
- P(X >= k) for X ~ Binomial(n, 1/2) with k = n is 2^-n.
"""

import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dedup.eval_index import EvalIndex
from dedup.eval_sets import EvalItem
from dedup.overlap import overlap_table
from dedup.overlap_report import CARD_MARK_END, CARD_MARK_START, bonferroni, render_markdown, split_report
from openwit.cli import main as cli
from pipeline.totals import write_overlap


def items(correct: str, prefix: str) -> dict[str, bool]:
    """'1100' -> {prefix0: True, prefix1: True, prefix2: False, prefix3: False}."""
    return {f"{prefix}{i}": c == "1" for i, c in enumerate(correct)}


def test_two_of_ten_overlap_both_right():
    # Overlap a0, a1 (both right); Clean a2..a9 with a2..a5 right: 4 of 8.
    r = split_report("a", items("1111110000", "a"), {"a0", "a1"})
    assert (r.n_all, r.n_overlap, r.n_clean, r.overlap_pct) == (10, 2, 8, 20.0)
    assert (r.correct_all, r.correct_overlap, r.correct_clean) == (6, 2, 4)
    assert r.acc_all == pytest.approx(0.6) and r.acc_overlap == 1.0 and r.acc_clean == 0.5
    assert r.all_minus_clean == pytest.approx(0.1) and r.overlap_minus_clean == pytest.approx(0.5)
    assert r.p_value == pytest.approx(0.25)  # P(X >= 2), X ~ Bin(2, 0.5)
    assert r.ci_low == pytest.approx(0.05) and r.ci_high == pytest.approx(1.0)  # sqrt(0.0025) = 0.05


def test_one_overlap_item_wrong():
    # Overlap b0 wrong; Clean b1..b4 with 3 right.
    r = split_report("b", items("01110", "b"), {"b0"})
    assert r.acc_all == pytest.approx(0.6) and r.acc_overlap == 0.0 and r.acc_clean == 0.75
    assert r.all_minus_clean == pytest.approx(-0.15) and r.overlap_minus_clean == pytest.approx(-0.75)
    assert r.p_value == pytest.approx(1.0)  # P(X >= 0) = 1
    assert r.ci_low == 0.0 and r.ci_high == pytest.approx(0.9975)  # 1 - 0.0025^(1/1)


def test_significant_leak():
    # 10 overlap items all right, Clean 5 of 10: p = 2^-10; alone, Bonferroni changes nothing.
    correct = {**items("1" * 10, "o"), **items("1111100000", "c")}
    [r] = bonferroni([split_report("s", correct, {f"o{i}" for i in range(10)})])
    assert r.p_value == pytest.approx(1 / 1024) and r.p_bonferroni == pytest.approx(1 / 1024)
    assert r.significant is True
    assert r.ci_low == pytest.approx(0.0025 ** 0.1)  # 0.5493
    assert r.overlap_minus_clean == pytest.approx(0.5) and r.all_minus_clean == pytest.approx(0.25)


def test_bonferroni_multiplies_by_the_number_of_tests_and_caps_at_one():
    a = split_report("a", items("1111110000", "a"), {"a0", "a1"})  # p = 0.25
    b = split_report("b", items("01110", "b"), {"b0"})  # p = 1
    none = split_report("n", items("10", "n"), set())  # no Overlap: not a test, not counted
    bonferroni([a, b, none])
    assert a.p_bonferroni == pytest.approx(0.5) and a.significant is False
    assert b.p_bonferroni == 1.0
    assert none.p_value is None and none.p_bonferroni is None and none.significant is None


def test_zero_percent_overlap():
    r = split_report("z", items("1100", "z"), set())
    assert (r.n_overlap, r.n_clean, r.overlap_pct) == (0, 4, 0.0)
    assert r.acc_all == 0.5 and r.acc_clean == 0.5 and r.all_minus_clean == 0.0
    assert r.acc_overlap is None and r.overlap_minus_clean is None
    assert r.p_value is None and r.ci_low is None and r.ci_high is None


def test_hundred_percent_overlap():
    r = split_report("h", items("1111", "h"), {"h0", "h1", "h2", "h3"})
    assert (r.n_overlap, r.n_clean, r.overlap_pct) == (4, 0, 100.0)
    assert r.acc_overlap == 1.0 and r.acc_clean is None and r.all_minus_clean is None
    assert r.p_value is None  # no Clean accuracy to test against
    assert r.ci_low == pytest.approx(0.0025 ** 0.25) and r.ci_high == 1.0  # 0.2236


def test_empty_eval_set_and_overlap_ids_without_prediction():
    r = split_report("e", {}, {"x"})
    assert (r.n_all, r.n_overlap, r.n_clean) == (0, 0, 0)
    assert r.overlap_pct is None and r.acc_all is None and r.p_value is None
    # An overlap record of an item that was not predicted does not enter the split.
    r = split_report("f", items("10", "f"), {"f0", "unpredicted"})
    assert (r.n_overlap, r.n_clean) == (1, 1)


def test_clean_accuracy_zero_or_one():
    # Clean all wrong (null p = 0): any right Overlap item is impossible under the null -> p = 0.
    assert split_report("c", {"o": True, "c": False}, {"o"}).p_value == 0.0
    # Clean all right (null p = 1): X = n surely, so P(X >= k) = 1 whatever Overlap scored.
    assert split_report("c", {"o": False, "c": True}, {"o"}).p_value == 1.0


def test_markdown_shows_undefined_as_dash_and_marks_significance():
    correct = {**items("1" * 10, "o"), **items("1111100000", "c")}
    reports = bonferroni([split_report("s", correct, {f"o{i}" for i in range(10)}),
                          split_report("z", items("1100", "z"), set())])
    md = render_markdown(reports, ["phash"])
    assert "| s | 20 | 10 | 10 | 50.0 | 75.0 | 100.0 | 50.0 | +25.0 | +50.0 | 0.000977 | 0.000977 * | [54.9, 100.0] |" in md
    assert "| z | 4 | 0 | 4 | 0.0 | 50.0 | – | 50.0 | +0.0 | – | – | – | – |" in md
    assert "Median overlap over 2 eval sets: 25.0%" in md


# ---- the command --------------------------------------------------------------------------------------

def _image(seed: int) -> bytes:
    img = Image.new("RGB", (32, 32), (seed * 40 % 256, 90, 200 - seed * 30 % 200))
    for x in range(seed * 3, seed * 3 + 8):
        for y in range(4, 20):
            img.putpixel((x, y), (255, 255, 255))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def build(tmp_path):
    """A finished build whose overlap records say: a0 leaked twice (two samples), a1 by pHash, a2 only by
    caption; eval set b never matched (no overlap file, as the pipeline writes it)."""
    out = tmp_path / "build"
    (out / "overlap").mkdir(parents=True)
    (out / "stats.json").write_text("{}")
    rows = [
        {"eval_set": "a", "eval_id": "a0", "sample_key": "000000001", "url": "u1", "method": "sha256", "distance": 0.0},
        {"eval_set": "a", "eval_id": "a0", "sample_key": "000000002", "url": "u2", "method": "phash", "distance": 2.0},
        {"eval_set": "a", "eval_id": "a1", "sample_key": "000000003", "url": "u3", "method": "crop_phash", "distance": 5.0},
        {"eval_set": "a", "eval_id": "a2", "sample_key": "000000004", "url": "u4", "method": "caption_minhash", "distance": 0.1},
    ]
    pq.write_table(overlap_table(rows), out / "overlap" / "a.parquet")
    # The card's marked place for the link, as pipeline/report.py draws it (tests/test_report.py checks the marks).
    (out / "report.html").write_text(f"<html><body>{CARD_MARK_START}<p>no report yet</p>{CARD_MARK_END}</body></html>")
    return out


def test_openwit_overlap_end_to_end(build, tmp_path, capsys):
    # a: a0, a1 overlap and right; a2 (caption match only) and a3..a9 clean with a2..a5 right -> case "a" above
    # when captions do not count.
    pq.write_table(pa.table({"eval_set": ["a"] * 10, "eval_id": [f"a{i}" for i in range(10)],
                             "label": ["x"] * 10, "prediction": ["x"] * 6 + ["y"] * 4,
                             "correct": [True] * 6 + [False] * 4}), tmp_path / "a.parquet")
    (tmp_path / "b.csv").write_text("eval_id,correct\nb0,1\nb1,0\n")
    code = cli(["overlap", "--build", str(build), "--predictions", str(tmp_path / "a.parquet"),
                "--predictions", f"b={tmp_path / 'b.csv'}", "--methods", "sha256,phash,mirror_phash,crop_phash"])
    assert code == 0
    report = json.loads((build / "overlap_report" / "report.json").read_text())
    a, b = report["eval_sets"]
    assert (a["eval_set"], a["n_overlap"], a["n_clean"], a["acc_clean"]) == ("a", 2, 8, 0.5)
    assert a["p_value"] == pytest.approx(0.25) and a["p_bonferroni"] == pytest.approx(0.25)  # the only test
    assert (b["eval_set"], b["n_all"], b["n_overlap"], b["acc_all"], b["p_value"]) == ("b", 2, 0, 0.5, None)
    assert report["confidence"] == 0.995
    png = (build / "overlap_report" / "figure.png").read_bytes()
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size[0] > 500
    assert "| a | 10 | 2 | 8 | 20.0 |" in (build / "overlap_report" / "report.md").read_text()
    assert '<a href="overlap_report/report.md">' in (build / "report.html").read_text()

    # Every method counts by default: the caption match moves a2 (right) into Overlap.
    assert cli(["overlap", "--build", str(build), "--predictions", str(tmp_path / "a.parquet"),
                "--output", str(tmp_path / "all")]) == 0
    [a] = json.loads((tmp_path / "all" / "report.json").read_text())["eval_sets"]
    assert (a["n_overlap"], a["correct_overlap"], a["acc_clean"]) == (3, 3, pytest.approx(3 / 7))


def test_predictions_checked_against_the_eval_index(build, tmp_path, capsys):
    index, _ = EvalIndex.build([("a", [EvalItem(f"a{i}", _image(i)) for i in range(3)])])
    index.save(str(tmp_path / "eval.idx"))
    (tmp_path / "p.csv").write_text("eval_id,correct\na0,1\na1,0\na2,1\n")
    base = ["overlap", "--build", str(build), "--eval-index", str(tmp_path / "eval.idx")]
    assert cli(base + ["--predictions", f"a={tmp_path / 'p.csv'}"]) == 0
    (tmp_path / "q.csv").write_text("eval_id,correct\na0,1\nnot-in-index,0\n")
    assert cli(base + ["--predictions", f"a={tmp_path / 'q.csv'}"]) == 2
    assert "not-in-index" in capsys.readouterr().err
    assert cli(base + ["--predictions", f"other={tmp_path / 'p.csv'}"]) == 2
    assert "'other'" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("eval_id,correct\nx,maybe\n", "'correct' is 'maybe'"),
    ("eval_id,correct\nx,1\nx,0\n", "predicted twice"),
    ("id,ok\nx,1\n", "needs 'eval_id'"),
])
def test_bad_predictions_exit_2(build, tmp_path, capsys, content, message):
    (tmp_path / "p.csv").write_text(content)
    assert cli(["overlap", "--build", str(build), "--predictions", f"a={tmp_path / 'p.csv'}"]) == 2
    assert message in capsys.readouterr().err


def test_missing_eval_set_column_and_unfinished_build(build, tmp_path, capsys):
    (tmp_path / "p.csv").write_text("eval_id,correct\nx,1\n")
    assert cli(["overlap", "--build", str(build), "--predictions", str(tmp_path / "p.csv")]) == 2
    assert "--predictions NAME=" in capsys.readouterr().err
    os.remove(build / "stats.json")
    assert cli(["overlap", "--build", str(build), "--predictions", f"a={tmp_path / 'p.csv'}"]) == 2
    assert "not a finished OpenWIT build" in capsys.readouterr().err


def test_build_counts_items_and_samples_not_records(tmp_path):
    rows = [{"eval_set": "a", "eval_id": "a0", "sample_key": "1", "url": "u", "method": m, "distance": 0.0}
            for m in ("sha256", "phash")] + [
        {"eval_set": "a", "eval_id": "a0", "sample_key": "2", "url": "v", "method": "phash", "distance": 1.0},
        {"eval_set": "a", "eval_id": "a1", "sample_key": "2", "url": "v", "method": "phash", "distance": 3.0}]
    name, counts = write_overlap(("a", rows), str(tmp_path))
    assert (name, counts) == ("a", {"items": 2, "samples": 2})  # 4 records
    assert pq.read_table(tmp_path / "overlap" / "a.parquet").num_rows == 4

