"""`openwit experiment` (and `make experiment`): the CLIP paper's sections 2, 3 and 5 in miniature, offline.

1. Generates the experiment web (openwit/experiment_web.py): pictures of coloured shapes captioned with what
   they show, and held-out eval sets (colours, shapes) some of whose images leak onto the web as copies.
2. Indexes the eval sets (`openwit eval-index`).
3. Serves the web on 127.0.0.1 and builds a dataset from it (`openwit build --decontaminate report`: the
   leaked copies stay in, and overlap/ records them).
4. Trains a tiny CLIP on the shards on the CPU (`openwit train`).
5. Evaluates it zero-shot on the eval sets (`openwit zeroshot`, prompt ensembles over the other attribute)
   and with a linear probe (`openwit linear-probe`, trained on a separate labelled split).
6. Writes the overlap report (`openwit overlap`): did the leaked eval images score higher than the clean ones?

Everything derives from --seed. OUTPUT/experiment.json and OUTPUT/experiment.md sum it up, with chance
levels beside the scores; each step's own outputs are in OUTPUT/<step>/.
"""

import argparse
import glob
import json
import os
import sys
import time

import pyarrow.parquet as pq

from openwit.errors import InputError, parse_command_line
from openwit.experiment_web import COLOURS, SHAPES

CHANCE = {"colours": 1 / len(COLOURS), "shapes": 1 / len(SHAPES)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="openwit experiment", description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", default="experiment-out", help="folder for every step's outputs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pictures", type=int, default=2000, help="pictures on the web (besides leaked copies)")
    ap.add_argument("--eval-per-class", type=int, default=25, help="eval images per class")
    ap.add_argument("--probe-per-class", type=int, default=20, help="labelled images per class for the probe")
    ap.add_argument("--leak-fraction", type=float, default=0.1, help="share of eval images copied onto the web")
    ap.add_argument("--model", default="tiny-RN", help="encoders model name (tiny-RN, tiny-ViT, RN50, ...)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--image-size", type=int, default=64, help="side of the stored images (build)")
    ap.add_argument("--no-linear-probe", action="store_true", help="skip the linear probe")
    # A fixed port by default: the web's URLs, and so the shard plan (which hashes them) and every later step,
    # are then the same on every run of a seed. 0 takes any free port, at the cost of that determinism.
    ap.add_argument("--port", type=int, default=47390, help="127.0.0.1 port of the experiment web (0: any free)")
    args = parse_command_line(ap, argv)
    if args.pictures < 50 or args.eval_per_class < 2 or args.probe_per_class < 2:
        raise InputError("--pictures >= 50, --eval-per-class >= 2 and --probe-per-class >= 2, please")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port}: give a TCP port (0-65535)")
    if not 0 <= args.leak_fraction <= 1:
        raise InputError(f"--leak-fraction {args.leak_fraction}: give a share between 0 and 1")
    return args


def _step(name: str, code: int) -> None:
    if code:
        raise RuntimeError(f"experiment step {name!r} failed with exit status {code}")


def main(argv: list[str] | None = None) -> int:
    from dedup import build_index, overlap_report
    from openwit import experiment_web
    from openwit.demo_web import DemoWebServer, write_inputs
    from pipeline import build_wit
    from training import linear_probe, train, zeroshot

    args = parse_args(argv)
    out = os.path.abspath(args.output)
    path = lambda *parts: os.path.join(out, *parts)  # noqa: E731
    timings, started = {}, time.perf_counter()

    def timed(name: str, fn, *a) -> None:
        tick = time.perf_counter()
        print(f"\n== experiment: {name}", file=sys.stderr)
        _step(name, fn(*a))
        timings[name] = round(time.perf_counter() - tick, 1)

    tick = time.perf_counter()
    web = experiment_web.generate(args.seed, pictures=args.pictures, eval_per_class=args.eval_per_class,
                                  probe_per_class=args.probe_per_class, leak_fraction=args.leak_fraction)
    eval_paths = experiment_web.write_image_folders(web.eval_images, path("eval"))
    probe_paths = experiment_web.write_image_folders(web.probe_images, path("probe-train"))
    with open(path("leaked.json"), "w") as f:  # the truth the overlap detection is scored against
        json.dump(web.leaked, f, indent=2, sort_keys=True)
    timings["generate"] = round(time.perf_counter() - tick, 1)
    eval_specs = [f"{name}={p}" for name, p in sorted(eval_paths.items())]
    print(f"experiment web: {len(web.site.pairs)} pictures ({len(web.leaked)} leaked eval copies), "
          f"eval sets {', '.join(f'{n} ({len(os.listdir(p))} classes)' for n, p in sorted(eval_paths.items()))}")

    index = path("eval.idx")
    # Radius 4, not the default 8: flat synthetic graphics collide in pHash space (DESIGN.md §4); at 8 a third
    # of these eval images "match" some unrelated picture, at 4 every leaked copy and nothing else does.
    timed("eval-index", build_index.main, [a for s in eval_specs for a in ("--eval-set", s)] +
          ["--radius", "4", "--output", index])
    try:
        server = DemoWebServer(web.site, port=args.port)
        base_url = server.__enter__()
    except RuntimeError as e:
        raise InputError(f"{e}; give another --port (0 takes any free port, but then two runs of a seed differ)")
    try:
        pairs, queries = write_inputs(web.site, base_url, path("input"))
        timed("build", build_wit.main, [
            "--pairs", pairs, "--queries", queries, "--output", path("build"), "--allow-private-addresses",
            "--image-size", str(args.image_size), "--resize-mode", "center_crop",
            "--samples-per-shard", str(max(50, args.pictures // 4)), "--eval-index", index,
            "--decontaminate", "report"])
    finally:
        server.__exit__(None, None, None)
    shards = sorted(glob.glob(path("build", "shards", "*.tar")))
    import torch

    # One loader worker decodes on one core; training threads take the rest. On 2 cores, two training
    # threads beside the worker oversubscribe the machine and a step takes several times longer.
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    timed("train", train.main, [
        "--train-data", "::".join(shards), "--model", args.model, "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--wd", "0.1",
        "--warmup", str(max(1, len(web.site.pairs) // args.batch_size // 2)), "--workers", "1",
        "--shuffle-buffer", "500", "--seed", str(args.seed), "--logs", path("train"), "--no-progress",
        "--log-every", "5", "--save-every", "100000"])
    from training.checkpoint import latest

    ckpt = latest(path("train"))
    predictions = []
    for name, spec in zip(sorted(eval_paths), eval_specs):
        timed(f"zeroshot {name}", zeroshot.main, ["--checkpoint", ckpt, "--eval-set", spec, "--templates",
                                                  f"experiment-{name}", "--output", path("zeroshot", name)])
        predictions += ["--predictions", path("zeroshot", name, "predictions.parquet")]
    if not args.no_linear_probe:
        for name, spec in zip(sorted(eval_paths), eval_specs):
            timed(f"linear-probe {name}", linear_probe.main, [
                "--checkpoint", ckpt, "--train-set", f"{name}={probe_paths[name]}", "--eval-set", spec,
                "--shots", "1,2,4,8", "--seeds", "3", "--output", path("linear-probe", name)])
    timed("overlap", overlap_report.main, ["--build", path("build"), "--eval-index", index, *predictions,
                                           "--output", path("overlap_report")])
    summary = summarise(out, args, web, timings, time.perf_counter() - started)
    print(summary["markdown"])
    return 0


def summarise(out: str, args, web, timings: dict, seconds: float) -> dict:
    """experiment.json and experiment.md: each eval set's zero-shot and probe scores beside chance and the
    overlap report's split."""
    def load(*parts):
        p = os.path.join(out, *parts)
        return json.load(open(p)) if os.path.exists(p) else None

    stats = load("build", "stats.json")
    overlap = {r["eval_set"]: r for r in load("overlap_report", "report.json")["eval_sets"]}
    detected: dict[str, set] = {}
    for name in CHANCE:
        p = os.path.join(out, "build", "overlap", f"{name}.parquet")
        if os.path.exists(p):
            detected[name] = {f"{name}/{i}" for i in pq.read_table(p, columns=["eval_id"]).column(0).to_pylist()}
    sets = {}
    for name in sorted(CHANCE):
        leaked = {k for k in web.leaked if k.startswith(name + "/")}
        found = detected.get(name, set())
        zs = load("zeroshot", name, "metrics.json")["eval_sets"][name]
        probe = load("linear-probe", name, "metrics.json")
        sets[name] = {"chance": CHANCE[name], "zeroshot_top1": zs["top1"], "zeroshot_top5": zs["top5"],
                      "items": zs["items"],
                      "linear_probe_top1": probe["eval_sets"][name]["top1"] if probe else None,
                      "few_shot": ({k: v["mean"] for k, v in probe["eval_sets"][name].get("few_shot", {}).items()}
                                   if probe else None),
                      "overlap": {k: overlap[name][k] for k in ("n_overlap", "overlap_pct", "acc_overlap",
                                                                "acc_clean", "all_minus_clean", "p_value")},
                      # The detector scored against the truth: which eval images were really copied.
                      "leaked": len(leaked), "leaks_detected": len(leaked & found),
                      "false_detections": len(found - leaked)}
    result = {"seed": args.seed, "model": args.model, "epochs": args.epochs, "pictures": len(web.site.pairs),
              "leaked": len(web.leaked), "kept": stats["kept"], "seconds": round(seconds, 1), "timings": timings,
              "eval_sets": sets}
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    lines = [f"# openwit experiment (seed {args.seed}, {args.model}, {args.epochs} epochs, "
             f"{stats['kept']} training pairs, {round(seconds)} s)", "",
             "| eval set | chance | zero-shot top-1 | top-5 | linear probe | few-shot (1/2/4/8 per class) "
             "| overlap (leaked / detected / false) | acc Overlap | acc Clean |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name, s in sets.items():
        few = "/".join(pct(v) for v in (s["few_shot"] or {}).values()) or "–"
        o = s["overlap"]
        lines.append(f"| {name} | {pct(s['chance'])} | {pct(s['zeroshot_top1'])} | {pct(s['zeroshot_top5'])} "
                     f"| {pct(s['linear_probe_top1'])} | {few} | {o['n_overlap']} ({o['overlap_pct']:.1f}%: {s['leaked']} / "
                     f"{s['leaks_detected']} / {s['false_detections']}) "
                     f"| {pct(o['acc_overlap'])} | {pct(o['acc_clean'])} |")
    lines += ["", "Overlap report: overlap_report/report.md; steps: " +
              ", ".join(f"{k} {v} s" for k, v in timings.items())]
    result["markdown"] = "\n".join(lines) + "\n"
    with open(os.path.join(out, "experiment.json"), "w") as f:
        json.dump({k: v for k, v in result.items() if k != "markdown"}, f, indent=2)
    with open(os.path.join(out, "experiment.md"), "w") as f:
        f.write(result["markdown"])
    return result


if __name__ == "__main__":
    sys.exit(main())
