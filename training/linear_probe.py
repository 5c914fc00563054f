"""`openwit linear-probe`: logistic regression on frozen CLIP image features, as in the CLIP paper (appendix A.3).

    openwit linear-probe --checkpoint train-out/epoch_2_step_40.pt --train-set cifar10=data/cifar10-train \
        --eval-set cifar10=data/cifar10-test --shots 1,2,4,8,16 --output probe-out

scikit-learn's L-BFGS logistic regression. The regularisation strength is chosen on a validation split held
out of the training set by the paper's search: C at 1e-6, 1e-4, ..., 1e6 first, then the interval around the
best halved until it reaches 8 steps per decade. The chosen C is refit on train + validation and scored on
each --eval-set (per-item predictions in the format of `openwit zeroshot`, the input of `openwit overlap`).

--shots k1,k2,... adds the paper's few-shot probes (its figure 6): k labelled images per class drawn from the
training set, several seeds, mean and standard deviation of the top-1 accuracy, to read zero-shot against.
With one image per class there is nothing to validate on, so few-shot probes reuse the C chosen on the full
training set (which flatters them slightly; the paper does not say how it chose C there).
"""

import argparse
import json
import math
import os
import sys

import numpy as np

from openwit.errors import InputError

C_START = [10.0 ** e for e in range(-6, 7, 2)]  # the paper's initial grid, 1e-6 .. 1e6
STEPS_PER_DECADE = 8  # the paper's final resolution


def fit(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int = 1000):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=max_iter, solver="lbfgs").fit(features, labels)


def accuracy(model, features: np.ndarray, labels: np.ndarray) -> float:
    return float((model.predict(features) == labels).mean())


def sweep_c(train_x, train_y, val_x, val_y, max_iter: int = 1000) -> tuple[float, dict[float, float]]:
    """The C with the best validation accuracy, and the accuracy of every C tried.

    Ties go to the lower validation log-loss: on an easy validation split a vanishing C (1e-6) can reach the
    best accuracy with near-uniform probabilities, and refit on more data it then predicts one class."""
    from sklearn.metrics import log_loss

    scores: dict[float, tuple[float, float]] = {}  # C -> (accuracy, -log loss)

    def score(log_c: float) -> None:
        c = 10.0 ** log_c
        if c not in scores:
            model = fit(train_x, train_y, c, max_iter)
            scores[c] = (accuracy(model, val_x, val_y),
                         -log_loss(val_y, model.predict_proba(val_x), labels=model.classes_))

    for c in C_START:
        score(math.log10(c))
    best = max(scores, key=scores.get)
    step = 2.0  # decades between the grid's points
    while step > 1 / STEPS_PER_DECADE:
        step /= 2
        centre = math.log10(best)
        for log_c in (centre - step, centre + step):
            score(log_c)
        best = max(scores, key=scores.get)
    return best, {c: acc for c, (acc, _) in scores.items()}


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): `fraction` of each class held out, at least one image of each
    class left on both sides where the class has two or more."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = min(len(members) - 1, max(1, round(fraction * len(members)))) if len(members) > 1 else 0
        val += members[:n_val].tolist()
        train += members[n_val:].tolist()
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(val, dtype=int))


def few_shot(train_x, train_y, tests: dict[str, tuple[np.ndarray, np.ndarray]], shots: list[int], seeds: int,
             c: float, max_iter: int = 1000) -> dict:
    """eval set -> str(k) -> {mean, std, runs}: top-1 accuracy of probes trained on k images per class."""
    out: dict[str, dict] = {name: {} for name in tests}
    classes = np.unique(train_y)
    for k in shots:
        runs: dict[str, list[float]] = {name: [] for name in tests}
        for seed in range(seeds):
            rng = np.random.default_rng([k, seed])
            picked = np.concatenate([rng.permutation(np.flatnonzero(train_y == label))[:k] for label in classes])
            model = fit(train_x[picked], train_y[picked], c, max_iter)
            for name, (x, y) in tests.items():
                runs[name].append(accuracy(model, x, y))
        for name, accs in runs.items():
            out[name][str(k)] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "runs": accs}
    return out


def predictions(name: str, ids: list[str], labels: np.ndarray, model, x: np.ndarray) -> list[dict]:
    probs = model.predict_proba(x)
    best = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    classes = model.classes_
    rows = []
    for i, eval_id in enumerate(ids):
        top = classes[best[i]]
        rows.append({"eval_set": name, "eval_id": eval_id, "label": str(labels[i]), "prediction": str(top[0]),
                     "correct": bool(top[0] == labels[i]), "correct_top5": bool(labels[i] in top)})
    return rows


def labelled(eval_set, feats: np.ndarray, option: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    keep = [i for i, label in enumerate(eval_set.labels) if label is not None]
    if not keep:
        raise InputError(f"{option} {eval_set.name!r} has no labelled item: a probe needs class labels")
    return [eval_set.ids[i] for i in keep], np.array([eval_set.labels[i] for i in keep]), feats[keep]


def main(argv: list[str] | None = None) -> int:
    from training.features import image_features, load_eval_set
    from training.zeroshot import add_model_args, load_model, parse, write_predictions

    ap = argparse.ArgumentParser(prog="openwit linear-probe", description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--train-set", required=True, metavar="NAME=PATH", help="labelled images to train the probe on")
    ap.add_argument("--val-fraction", type=float, default=0.2, help="share of each class held out to choose C")
    ap.add_argument("--shots", default="", help="few-shot probes: images per class, e.g. 1,2,4,8,16")
    ap.add_argument("--seeds", type=int, default=3, help="draws of the few-shot training images per k")
    ap.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    ap.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations")
    ap.add_argument("--output", default="linear-probe-out", help="folder for predictions.parquet and metrics.json")
    args = parse(ap, argv)
    try:
        shots = [int(s) for s in args.shots.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--shots {args.shots!r}: give whole numbers of images per class, e.g. 1,2,4,8,16") from None
    if any(k < 1 for k in shots) or args.seeds < 1 or not 0 < args.val_fraction < 1:
        raise InputError("--shots need k >= 1, --seeds >= 1 and --val-fraction in (0, 1)")

    train_set = load_eval_set(args.train_set)
    tests = [load_eval_set(spec) for spec in args.eval_set]
    model, _ = load_model(args)
    _, train_y, train_x = labelled(train_set, image_features(model, train_set.images, args.batch_size, args.device),
                                   "--train-set")
    test_data = {}
    for t in tests:
        ids, y, x = labelled(t, image_features(model, t.images, args.batch_size, args.device), "--eval-set")
        unseen = sorted(set(y) - set(train_y))
        if unseen:
            raise InputError(f"--eval-set {t.name!r} has classes the training set lacks: {unseen[:5]}")
        test_data[t.name] = (ids, y, x)

    tr, val = validation_split(train_y, args.val_fraction, args.seed)
    if not len(val):
        raise InputError(f"--train-set {train_set.name!r}: every class has one image; a probe needs two per "
                         "class to hold one out for choosing C")
    c, tried = sweep_c(train_x[tr], train_y[tr], train_x[val], train_y[val], args.max_iter)
    probe = fit(train_x, train_y, c, args.max_iter)
    rows, metrics = [], {"C": c, "validation_accuracy": tried[c], "C_tried": len(tried),
                         "train_items": int(len(train_y)), "eval_sets": {}}
    for name, (ids, y, x) in test_data.items():
        set_rows = predictions(name, ids, y, probe, x)
        rows += set_rows
        top1 = sum(r["correct"] for r in set_rows) / len(set_rows)
        top5 = sum(r["correct_top5"] for r in set_rows) / len(set_rows)
        metrics["eval_sets"][name] = {"items": len(set_rows), "classes": len(probe.classes_), "top1": top1,
                                      "top5": top5}
        print(f"{name}: linear probe top-1 {100 * top1:.1f}%, top-5 {100 * top5:.1f}% (C = {c:.3g}, "
              f"{len(train_y)} training images)")
    if shots:
        fs = few_shot(train_x, train_y, {n: (x, y) for n, (_, y, x) in test_data.items()}, shots, args.seeds, c,
                      args.max_iter)
        for name, by_k in fs.items():
            metrics["eval_sets"][name]["few_shot"] = by_k
            print(f"{name}: few-shot " + ", ".join(f"{k}-shot {100 * v['mean']:.1f}±{100 * v['std']:.1f}%"
                                                   for k, v in by_k.items()))
    os.makedirs(args.output, exist_ok=True)
    write_predictions(rows, os.path.join(args.output, "predictions.parquet"))
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"wrote {args.output}/predictions.parquet and metrics.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
