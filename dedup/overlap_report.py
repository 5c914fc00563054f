"""The CLIP paper's overlap analysis (sec. 5, appendix C): did eval images leak into the build, and did the
leak inflate the scores?

Each eval set splits into Overlap (items with a match in the build's `overlap/{eval_set}.parquet`) and Clean
(the rest). Per eval set the report gives |All|, |Overlap|, |Clean|, overlap %, accuracy on All, Overlap and
Clean, All - Clean (how much the score moved because of the leak) and Overlap - Clean, and tests the Overlap
accuracy as the paper did: a one-sided binomial test with the Clean accuracy as the null (is Overlap better
than chance would make it?) and a 99.5% Clopper-Pearson interval of the Overlap accuracy. With several eval
sets the p-values are also Bonferroni-adjusted. scipy.stats computes the statistics.

The per-item correctness comes from any model: `openwit zeroshot` / `openwit linear-probe` write it, and a
CSV or Parquet with `eval_id` and `correct` columns (plus `eval_set`, or NAME=PATH on the command line) from
open_clip or anything else serves as well.
"""

import argparse
import csv
import html
import io
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pyarrow.parquet as pq
from scipy import stats

from dedup.eval_index import METHODS
from dedup.eval_sets import parse_eval_set_arg
from openwit.errors import InputError, parse_command_line

CONFIDENCE = 0.995  # the paper's 99.5% Clopper-Pearson interval
ALPHA = 0.05  # significance level of the (Bonferroni-adjusted) binomial tests
# report.html (pipeline/report.py) keeps this marked place for a link to the overlap report.
CARD_MARK_START, CARD_MARK_END = "<!--overlap-report-->", "<!--/overlap-report-->"


@dataclass
class SplitReport:
    """One eval set's numbers. Accuracies are None where their split is empty; so are the test and interval
    (no Overlap item: nothing to test; no Clean item: no null accuracy to test against)."""

    eval_set: str
    n_all: int
    n_overlap: int
    n_clean: int
    overlap_pct: float | None
    correct_all: int
    correct_overlap: int
    correct_clean: int
    acc_all: float | None
    acc_overlap: float | None
    acc_clean: float | None
    all_minus_clean: float | None
    overlap_minus_clean: float | None
    p_value: float | None  # one-sided: P(X >= correct_overlap) for X ~ Binomial(n_overlap, acc_clean)
    p_bonferroni: float | None  # p_value x number of eval sets tested, at most 1
    significant: bool | None  # p_bonferroni < alpha
    ci_low: float | None  # Clopper-Pearson interval of acc_overlap
    ci_high: float | None


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def split_report(eval_set: str, correct: dict[str, bool], overlap_ids: Iterable[str]) -> SplitReport:
    """The numbers of one eval set from its items' correctness and the ids of its items found in the build.

    Overlap ids without a prediction are ignored: the split is over the predicted items (All)."""
    overlap = set(overlap_ids) & correct.keys()
    n_all, n_overlap = len(correct), len(overlap)
    correct_all = sum(bool(c) for c in correct.values())
    correct_overlap = sum(bool(correct[i]) for i in overlap)
    n_clean, correct_clean = n_all - n_overlap, correct_all - correct_overlap
    acc_all, acc_overlap, acc_clean = (_ratio(correct_all, n_all), _ratio(correct_overlap, n_overlap),
                                       _ratio(correct_clean, n_clean))
    p_value = ci_low = ci_high = None
    if n_overlap:
        ci = stats.binomtest(correct_overlap, n_overlap).proportion_ci(CONFIDENCE, method="exact")
        ci_low, ci_high = float(ci.low), float(ci.high)
        if n_clean:
            p_value = float(stats.binomtest(correct_overlap, n_overlap, acc_clean, alternative="greater").pvalue)
    return SplitReport(
        eval_set=eval_set, n_all=n_all, n_overlap=n_overlap, n_clean=n_clean,
        overlap_pct=None if not n_all else 100.0 * n_overlap / n_all,
        correct_all=correct_all, correct_overlap=correct_overlap, correct_clean=correct_clean,
        acc_all=acc_all, acc_overlap=acc_overlap, acc_clean=acc_clean,
        all_minus_clean=None if acc_clean is None else acc_all - acc_clean,
        overlap_minus_clean=None if acc_overlap is None or acc_clean is None else acc_overlap - acc_clean,
        p_value=p_value, p_bonferroni=None, significant=None, ci_low=ci_low, ci_high=ci_high)


def bonferroni(reports: list[SplitReport], alpha: float = ALPHA) -> list[SplitReport]:
    """Adjust for testing several eval sets at once: p x (number of tests), capped at 1."""
    tests = sum(r.p_value is not None for r in reports)
    for r in reports:
        if r.p_value is not None:
            r.p_bonferroni = min(1.0, r.p_value * tests)
            r.significant = r.p_bonferroni < alpha
    return reports


def report_dict(reports: list[SplitReport], methods: Iterable[str], alpha: float = ALPHA) -> dict:
    return {
        "confidence": CONFIDENCE,
        "alpha": alpha,
        "test": "one-sided binomial test (greater) of the Overlap accuracy, Clean accuracy as null",
        "interval": f"Clopper-Pearson {CONFIDENCE:.1%} of the Overlap accuracy",
        "methods": list(methods),
        "eval_sets": [asdict(r) for r in reports],
    }


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def _p(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def render_markdown(reports: list[SplitReport], methods: Iterable[str], alpha: float = ALPHA) -> str:
    lines = [
        "# Eval-set overlap report",
        "",
        "As in the CLIP paper (sec. 5, appendix C): Overlap = eval items with a near-duplicate in the build "
        f"(methods: {', '.join(methods)}), Clean = the rest. Accuracies in %. p: one-sided binomial test of "
        "the Overlap accuracy with the Clean accuracy as null; p (Bonf.): times the number of eval sets "
        f"tested; * = p (Bonf.) < {alpha}. CI: {CONFIDENCE:.1%} Clopper–Pearson interval of the Overlap "
        "accuracy. – = undefined (empty split).",
        "",
        "| eval set | All | Overlap | Clean | overlap % | acc All | acc Overlap | acc Clean | All − Clean "
        "| Overlap − Clean | p | p (Bonf.) | CI Overlap |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in reports:
        ci = "–" if r.ci_low is None else f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}]"
        star = " *" if r.significant else ""
        overlap_pct = "–" if r.overlap_pct is None else f"{r.overlap_pct:.1f}"
        lines.append(
            f"| {r.eval_set} | {r.n_all} | {r.n_overlap} | {r.n_clean} | {overlap_pct} | {_pct(r.acc_all)} "
            f"| {_pct(r.acc_overlap)} | {_pct(r.acc_clean)} | {_pct(r.all_minus_clean, True)} "
            f"| {_pct(r.overlap_minus_clean, True)} | {_p(r.p_value)} | {_p(r.p_bonferroni)}{star} | {ci} |")
    tested = [r for r in reports if r.overlap_pct is not None]
    if tested:
        overlaps = sorted(r.overlap_pct for r in tested)
        mid = len(overlaps) // 2
        median = overlaps[mid] if len(overlaps) % 2 else (overlaps[mid - 1] + overlaps[mid]) / 2
        lines += ["", f"Median overlap over {len(tested)} eval sets: {median:.1f}% (the paper found 2.2% over 35)."]
    return "\n".join(lines) + "\n"


def render_figure(reports: list[SplitReport]) -> bytes:
    """PNG in the spirit of the paper's figure 17: left, Overlap − Clean accuracy with the interval against
    overlap %; right, All − Clean (the change of the reported score due to overlap) against overlap %."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    both = [r for r in reports if r.overlap_minus_clean is not None]  # eval sets with Overlap and Clean items
    for r in both:
        # The interval of the difference: the Overlap accuracy's interval moved by the Clean accuracy.
        low, high = r.ci_low - r.acc_clean, r.ci_high - r.acc_clean
        colour = "tab:red" if r.significant else "tab:blue"
        y = 100 * r.overlap_minus_clean
        left.errorbar(r.overlap_pct, y, yerr=[[y - 100 * low], [100 * high - y]], fmt="o", color=colour,
                      capsize=3)
        left.annotate(r.eval_set, (r.overlap_pct, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    left.axhline(0, color="grey", lw=0.8)
    left.set_xlabel("Detected data overlap (%)")
    left.set_ylabel("Difference in accuracy on Overlap vs Clean (%)")
    left.set_title(f"Overlap − Clean, {CONFIDENCE:.1%} CI (red: significant)", fontsize=10)
    for r in both:
        right.plot(r.overlap_pct, 100 * r.all_minus_clean, "o", color="tab:blue")
        right.annotate(r.eval_set, (r.overlap_pct, 100 * r.all_minus_clean), textcoords="offset points",
                       xytext=(5, 4), fontsize=8)
    right.axhline(0, color="grey", lw=0.8)
    right.set_xlabel("Detected data overlap (%)")
    right.set_ylabel("Overall accuracy change due to overlap (%)")
    right.set_title("All − Clean", fontsize=10)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if not both:
            ax.text(0.5, 0.5, "no eval set with both splits", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


# ---- inputs and the command -----------------------------------------------------------------------------

TRUE, FALSE = {"1", "true", "t", "yes", "y"}, {"0", "false", "f", "no", "n"}


def _as_bool(value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise InputError(f"{where}: 'correct' is {value!r}; write true/false or 1/0")


def _read_rows(path: str) -> list[dict]:
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            data = f.read()
    except Exception as e:  # each Beam filesystem raises its own error types
        raise InputError(f"--predictions {path!r} cannot be read: {e}") from e
    if path.lower().endswith(".parquet"):
        try:
            return pq.read_table(io.BytesIO(data)).to_pylist()
        except Exception as e:
            raise InputError(f"--predictions {path!r} is not a readable Parquet file: {e}") from e
    if path.lower().endswith(".csv"):
        try:
            return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
        except (UnicodeDecodeError, csv.Error) as e:
            raise InputError(f"--predictions {path!r} is not a UTF-8 CSV file: {e}") from e
    raise InputError(f"--predictions {path!r}: give a .parquet or .csv file")


def read_predictions(spec: str) -> dict[str, dict[str, bool]]:
    """eval set -> eval id -> correct, from PATH (with an eval_set column) or NAME=PATH (without one).

    Columns: eval_id and correct (true/false, 1/0), or eval_id, label and prediction (correct = equal)."""
    name, path = None, spec
    if "=" in spec and not os.path.exists(spec):
        name, path = parse_eval_set_arg(spec)
    rows = _read_rows(path)
    if not rows:
        raise InputError(f"--predictions {path!r} holds no rows")
    columns = set(rows[0])
    if "eval_id" not in columns or not ({"correct"} <= columns or {"label", "prediction"} <= columns):
        raise InputError(f"--predictions {path!r} has columns {sorted(columns)}; it needs 'eval_id' and "
                         "'correct' (or 'label' and 'prediction'), as `openwit zeroshot` writes them")
    if name is None and "eval_set" not in columns:
        raise InputError(f"--predictions {path!r} has no 'eval_set' column; name its eval set on the "
                         f"command line: --predictions NAME={path}")
    out: dict[str, dict[str, bool]] = {}
    for row_no, row in enumerate(rows, start=1):
        where = f"--predictions {path!r}, row {row_no}"
        eval_set = name or str(row["eval_set"])
        eval_id = str(row["eval_id"])
        if "correct" in columns:
            correct = _as_bool(row["correct"], where)
        else:
            correct = str(row["label"]) == str(row["prediction"])
        items = out.setdefault(eval_set, {})
        if eval_id in items:
            raise InputError(f"{where}: eval item {eval_id!r} of {eval_set!r} is predicted twice; keep one "
                             "row per item (top-1 correctness)")
        items[eval_id] = correct
    return out


def read_overlap_ids(build: str, methods: Iterable[str]) -> dict[str, set[str]]:
    """eval set -> ids of its items with a match of one of `methods` in the build's overlap records."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(FileSystems.join(build, "stats.json")):
        raise InputError(f"--build {build!r} is not a finished OpenWIT build (no stats.json); give the "
                         "--output folder of `openwit build`")
    try:
        found = FileSystems.match([FileSystems.join(build, "overlap", "*.parquet")])[0].metadata_list
    except Exception as e:  # each Beam filesystem raises its own error types
        raise InputError(f"--build {build!r} cannot be listed: {e}") from e
    wanted = set(methods)
    out: dict[str, set[str]] = {}
    for meta in found:
        with FileSystems.open(meta.path, compression_type="uncompressed") as f:
            table = pq.read_table(io.BytesIO(f.read()), columns=["eval_set", "eval_id", "method"])
        for row in table.to_pylist():
            if row["method"] in wanted:
                out.setdefault(row["eval_set"], set()).add(row["eval_id"])
    return out


def check_against_index(predictions: dict[str, dict[str, bool]], index_path: str) -> None:
    """The predicted eval sets and ids must be those the build was checked against; otherwise the
    Clean split would silently include items that were never looked for."""
    from dedup.eval_index import EvalIndex

    index = EvalIndex.load(index_path)
    ids: dict[str, set[str]] = {name: set() for name in index.eval_sets}
    for set_no, eval_id in zip(index.item_set.tolist(), index.item_ids):
        ids[index.eval_sets[set_no]].add(eval_id)
    for eval_set, items in predictions.items():
        if eval_set not in ids:
            raise InputError(f"eval set {eval_set!r} of the predictions is not in the eval index "
                             f"{index_path!r} (it holds {index.eval_sets}); name the eval sets as in "
                             "`openwit eval-index`")
        unknown = sorted(items.keys() - ids[eval_set])
        if unknown:
            raise InputError(f"{len(unknown)} predicted items of {eval_set!r} are not in the eval index "
                             f"{index_path!r}, e.g. {unknown[:3]}; predictions must use the index's item ids "
                             "(the same loaders give the same ids)")


def link_from_card(build: str, output: str) -> None:
    """Point the build's report.html at the overlap report (the card leaves a marked place for the link)."""
    from apache_beam.io.filesystems import FileSystems

    card = FileSystems.join(build, "report.html")
    if not FileSystems.exists(card):
        return
    with FileSystems.open(card, compression_type="uncompressed") as f:
        page = f.read().decode()
    start, end = page.find(CARD_MARK_START), page.find(CARD_MARK_END)
    if start < 0 or end < 0:
        return
    build_abs, out_abs = os.path.abspath(build), os.path.abspath(output)
    href = (os.path.relpath(out_abs, build_abs) if "://" not in build + output else output.rstrip("/"))
    link = (f'<p>Overlap report: <a href="{html.escape(href)}/report.md">report.md</a>, '
            f'<a href="{html.escape(href)}/figure.png">figure</a>, '
            f'<a href="{html.escape(href)}/report.json">report.json</a>.</p>')
    page = page[:start + len(CARD_MARK_START)] + link + page[end:]
    with FileSystems.create(card) as f:
        f.write(page.encode())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="openwit overlap", description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, help="output folder of `openwit build` (holds overlap/)")
    ap.add_argument("--predictions", action="append", required=True, metavar="[NAME=]PATH",
                    help="per-item predictions (.parquet or .csv): eval_set, eval_id, correct; NAME=PATH for a "
                         "file without an eval_set column (repeat for several)")
    ap.add_argument("--eval-index", help="the eval index the build was checked against; predicted eval sets "
                                         "and ids must be in it")
    ap.add_argument("--output", help="folder for report.json, report.md and figure.png "
                                     "(default: BUILD/overlap_report)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"overlap methods that count as a match (default: all of {','.join(METHODS)})")
    ap.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level (default {ALPHA})")
    args = parse_command_line(ap, argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad or not args.methods:
        raise InputError(f"--methods: unknown {bad or 'empty list'}; choose from {','.join(METHODS)}")
    if not 0 < args.alpha < 1:
        raise InputError(f"--alpha {args.alpha}: give a level between 0 and 1, e.g. 0.05")
    args.output = args.output or args.build.rstrip("/") + "/overlap_report"
    return args


def main(argv: list[str] | None = None) -> int:
    from apache_beam.io.filesystems import FileSystems

    args = parse_args(argv)
    predictions: dict[str, dict[str, bool]] = {}
    for spec in args.predictions:
        for eval_set, items in read_predictions(spec).items():
            if eval_set in predictions:
                raise InputError(f"eval set {eval_set!r} is in two --predictions files; give each once")
            predictions[eval_set] = items
    if args.eval_index:
        check_against_index(predictions, args.eval_index)
    overlap = read_overlap_ids(args.build, args.methods)
    reports = bonferroni([split_report(name, predictions[name], overlap.get(name, ()))
                          for name in sorted(predictions)], args.alpha)
    if not FileSystems.exists(args.output):
        FileSystems.mkdirs(args.output)
    outputs = {
        "report.json": json.dumps(report_dict(reports, args.methods, args.alpha), indent=2).encode(),
        "report.md": render_markdown(reports, args.methods, args.alpha).encode(),
        "figure.png": render_figure(reports),
    }
    for name, data in outputs.items():
        with FileSystems.create(FileSystems.join(args.output, name)) as f:
            f.write(data)
    link_from_card(args.build, args.output)
    print(outputs["report.md"].decode())
    print(f"wrote {args.output}/report.json, report.md, figure.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
