"""`openwit zeroshot`: zero-shot classification and image<->text retrieval, as in the CLIP paper (sec. 3.1).

    openwit zeroshot --checkpoint train-out/epoch_2_step_40.pt --eval-set cifar10=data/cifar10-test \
        --templates cifar --output zs-out
    openwit zeroshot --model ViT-B/32 --checkpoint ViT-B-32.pt --eval-set ...   (other weights)

Each class name goes into every prompt template ("a photo of a {}."); the template embeddings of a class are
L2-normalised, averaged in embedding space and renormalised, which is the paper's ensemble; the classifier
is that matrix, and an image's class is the one whose embedding is nearest in cosine. Templates are data
files (training/templates/: `imagenet` has the paper's 80, `cifar` its 18, `one` the single "a photo of a
{}."), or any file with one template a line. Class names are the eval set's labels (class folder names,
"_" read as a space) unless --classnames maps them.

Eval sets with captions also get retrieval: R@1/5/10 of image->text (an image's best-ranked own caption)
and text->image (a caption's image). Writes OUTPUT/predictions.parquet (eval_set, eval_id, label,
prediction, correct, correct_top5; the input of `openwit overlap`) and OUTPUT/metrics.json.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

from openwit.errors import InputError, parse_command_line
from training.features import EvalSet, image_features, load_eval_set, text_features

TEMPLATE_DIR = os.path.join(os.path.dirname(__file__), "templates")
PREDICTION_COLUMNS = ("eval_set", "eval_id", "label", "prediction", "correct", "correct_top5")


def bundled_templates() -> list[str]:
    return sorted(f[:-len(".txt")] for f in os.listdir(TEMPLATE_DIR) if f.endswith(".txt"))


def load_templates(spec: str) -> list[str]:
    """A bundled set by name (imagenet, cifar, one, ...) or a file: one template a line with {} for the class
    name; blank lines and lines starting with # are skipped."""
    path = spec if os.path.exists(spec) else os.path.join(TEMPLATE_DIR, f"{spec}.txt")
    if not os.path.exists(path):
        raise InputError(f"--templates {spec!r}: no such file and no bundled set of that name "
                         f"(bundled: {', '.join(bundled_templates())})")
    with open(path, encoding="utf-8") as f:
        templates = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates:
        raise InputError(f"--templates {path!r}: each line needs exactly one {{}} where the class name goes "
                         f"({'e.g. ' + repr(bad[0]) if bad else 'the file has no template'})")
    return templates


def load_classnames(path: str | None) -> dict[str, str]:
    """label -> class name, from lines 'label<TAB>class name' (e.g. CIFAR's '0<TAB>airplane')."""
    if path is None:
        return {}
    names = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip() or line.startswith("#"):
                continue
            label, sep, name = line.rstrip("\n").partition("\t")
            if not sep or not name.strip():
                raise InputError(f"--classnames {path!r}, line {line_no}: expected 'label<TAB>class name'")
            names[label.strip()] = name.strip()
    return names


def class_prompt_name(label: str, classnames: dict[str, str]) -> str:
    return classnames.get(label, label.replace("_", " "))


def zero_shot_classifier(model, tokenizer, classnames: list[str], templates: list[str], device="cpu") -> torch.Tensor:
    """[classes, embed_dim]: per class, the renormalised mean of its normalised template embeddings."""
    texts = [t.format(c) for c in classnames for t in templates]
    feats = text_features(model, tokenizer, texts, device=device).view(len(classnames), len(templates), -1)
    mean = feats.mean(dim=1)
    return mean / mean.norm(dim=-1, keepdim=True)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first (ties: lower index first, stable)."""
    k = min(k, scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def classify(eval_set: EvalSet, feats: np.ndarray, classifier: np.ndarray, classes: list[str]) -> tuple[list[dict], dict]:
    """Per-item prediction rows and the top-1 / top-5 accuracy of the labelled items."""
    labelled = [i for i, label in enumerate(eval_set.labels) if label is not None]
    index = {c: n for n, c in enumerate(classes)}
    best = top_k(feats[labelled] @ classifier.T, 5)
    rows = []
    for row, i in enumerate(labelled):
        truth = index[eval_set.labels[i]]
        rows.append({"eval_set": eval_set.name, "eval_id": eval_set.ids[i], "label": eval_set.labels[i],
                     "prediction": classes[best[row, 0]], "correct": bool(best[row, 0] == truth),
                     "correct_top5": bool(truth in best[row])})
    n = len(rows)
    metrics = {"items": n, "classes": len(classes), "chance": 1 / len(classes),
               "top1": sum(r["correct"] for r in rows) / n, "top5": sum(r["correct_top5"] for r in rows) / n}
    return rows, metrics


def retrieval(image_feats: np.ndarray, text_feats: np.ndarray, text_image: list[int], ks=(1, 5, 10)) -> dict:
    """Recall@K both ways: image->text counts an image as found when any of its captions ranks within K;
    text->image counts a caption when its image ranks within K."""
    sims = image_feats @ text_feats.T  # [images, texts]
    text_image = np.asarray(text_image)
    own = text_image[None, :] == np.arange(len(image_feats))[:, None]
    # Rank of a text for an image = how many texts score higher; an image's rank = its best own caption's.
    i2t_rank = np.array([(sims[i] > sims[i][own[i]].max()).sum() for i in range(len(image_feats)) if own[i].any()])
    t2i_rank = (sims > sims[text_image, np.arange(len(text_image))][None, :]).sum(axis=0)
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = float((i2t_rank < k).mean())
        out[f"text_to_image_R@{k}"] = float((t2i_rank < k).mean())
    return out


def evaluate(model, tokenizer, eval_set: EvalSet, templates: list[str], classnames: dict[str, str],
             batch_size: int = 64, device="cpu") -> tuple[list[dict], dict]:
    """Zero-shot predictions and metrics of one eval set (classification if labelled, retrieval if captioned)."""
    feats = image_features(model, eval_set.images, batch_size, device)
    rows, metrics = [], {"templates": len(templates)}
    classes = sorted({label for label in eval_set.labels if label is not None})
    if classes:
        names = [class_prompt_name(c, classnames) for c in classes]
        classifier = zero_shot_classifier(model, tokenizer, names, templates, device).numpy()
        rows, scores = classify(eval_set, feats, classifier, classes)
        metrics.update(scores)
    texts = [(i, c) for i, caps in enumerate(eval_set.captions) for c in caps]
    if texts:
        text_feats = text_features(model, tokenizer, [c for _, c in texts], device=device).numpy()
        metrics["retrieval"] = retrieval(feats, text_feats, [i for i, _ in texts])
        metrics["captions"] = len(texts)
    if not classes and not texts:
        raise InputError(f"eval set {eval_set.name!r} has neither labels nor captions: nothing to evaluate")
    return rows, metrics


def write_predictions(rows: list[dict], path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("eval_set", pa.string()), ("eval_id", pa.string()), ("label", pa.string()),
                        ("prediction", pa.string()), ("correct", pa.bool_()), ("correct_top5", pa.bool_())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def add_model_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--checkpoint", help="a checkpoint of `openwit train`, or weights for --model")
    ap.add_argument("--model", help="model name (RN50, ViT-B/32, tiny-RN, ...) when --checkpoint holds other "
                                    "weights (OpenAI archive, open_clip checkpoint); alone: random weights")
    ap.add_argument("--eval-set", action="append", required=True, metavar="NAME=PATH",
                    help="an eval set (image folder, WebDataset tar(s), .parquet or .csv), as for eval-index")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def parse(ap: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parse_command_line(ap, argv)
    if not args.checkpoint and not args.model:
        raise InputError("give --checkpoint (from `openwit train`) or --model (and --checkpoint for its weights)")
    if args.checkpoint and not os.path.exists(args.checkpoint):
        raise InputError(f"--checkpoint {args.checkpoint!r} does not exist")
    return args


def load_model(args):
    from training.checkpoint import load_model as load

    return load(args.checkpoint, device=args.device, model_name=args.model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="openwit zeroshot", description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--templates", default="imagenet",
                    help=f"prompt templates: a file or a bundled set ({', '.join(bundled_templates())})")
    ap.add_argument("--classnames", help="file of 'label<TAB>class name' lines (default: the labels)")
    ap.add_argument("--output", default="zeroshot-out", help="folder for predictions.parquet and metrics.json")
    args = parse(ap, argv)
    templates, classnames = load_templates(args.templates), load_classnames(args.classnames)
    eval_sets = [load_eval_set(spec) for spec in args.eval_set]
    model, tokenizer = load_model(args)
    all_rows, metrics = [], {}
    for eval_set in eval_sets:
        rows, metrics[eval_set.name] = evaluate(model, tokenizer, eval_set, templates, classnames,
                                                args.batch_size, args.device)
        all_rows += rows
        m = metrics[eval_set.name]
        if "top1" in m:
            print(f"{eval_set.name}: zero-shot top-1 {100 * m['top1']:.1f}%, top-5 {100 * m['top5']:.1f}% "
                  f"({m['items']} items, {m['classes']} classes, chance {100 * m['chance']:.1f}%)")
        if "retrieval" in m:
            print(f"{eval_set.name}: retrieval " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in m["retrieval"].items()))
    os.makedirs(args.output, exist_ok=True)
    write_predictions(all_rows, os.path.join(args.output, "predictions.parquet"))
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump({"checkpoint": args.checkpoint, "model": args.model, "templates": args.templates,
                   "eval_sets": metrics}, f, indent=2)
    print(f"wrote {args.output}/predictions.parquet and metrics.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
