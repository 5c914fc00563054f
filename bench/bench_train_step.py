"""Trainer throughput: `openwit train` against open_clip's trainer (`open_clip_train.main`), same model size,
batch, precision, loader workers and shards, one epoch each, alternating; medians over --runs.

    sh bench/fetch_dedup_photos.sh && python bench/bench_train_loader.py --runs 1   # makes the shards
    python bench/bench_train_step.py --runs 3

On this CPU: the tiny-RN config (encoders/configs/tiny-RN.json, given to open_clip as the same config in its
format), fp32. Reported: samples/s of the steps each trainer logs (after its first logged interval), and
of the whole command per wall second and per CPU-second (all its processes: what a shared machine can
still compare). open_clip_train runs with webdataset's end-of-shard marker turned off (see
bench/bench_train_loader.py: its KeyError 'fname' under webdataset 1.0).
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARDS = os.path.join(HERE, "work", "train_loader", "shards_8x250", "shards", "{00000..00007}.tar")

# encoders/configs/tiny-RN.json in open_clip's config format.
OPEN_CLIP_TINY_RN = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}

OPEN_CLIP_LAUNCHER = """
import functools, sys
sys.path.insert(0, {tests!r})
from open_clip_compat import import_open_clip
open_clip = import_open_clip()
open_clip.add_model_config({config_dir!r})
import open_clip_train.data as ocd
from webdataset.tariterators import tar_file_expander
ocd.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)
from open_clip_train.main import main
main(sys.argv[1:])
"""


def timed(cmd, cwd):
    """(completed process, wall seconds, CPU seconds of it and its waited-for descendants)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"{cmd[:4]} failed:\n{out.stderr[-3000:]}")
    return out, wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def run_ours(work, args):
    logs = os.path.join(work, "ours")
    cmd = [sys.executable, "-m", "openwit", "train", "--train-data", SHARDS, "--model", "tiny-RN",
           "--batch-size", str(args.batch_size), "--epochs", "1", "--workers", str(args.workers),
           "--precision", "fp32", "--warmup", "10", "--logs", logs, "--log-every", "5", "--no-progress",
           "--save-every", "100000"]
    _, whole, cpu = timed(cmd, ROOT)
    lines = [json.loads(x) for x in open(os.path.join(logs, "metrics.jsonl"))]
    rates = [x["samples_per_s"] for x in lines if "samples_per_s" in x][1:]
    samples = json.load(open(os.path.join(logs, "config.json")))["steps_per_epoch"] * args.batch_size
    return statistics.median(rates), samples / whole, samples / cpu


def run_open_clip(work, args):
    config_dir = os.path.join(work, "oc_configs")
    os.makedirs(config_dir, exist_ok=True)
    with open(os.path.join(config_dir, "tiny-RN.json"), "w") as f:
        json.dump(OPEN_CLIP_TINY_RN, f)
    launcher = os.path.join(work, "oc_launch.py")
    with open(launcher, "w") as f:
        f.write(OPEN_CLIP_LAUNCHER.format(tests=os.path.join(ROOT, "tests"), config_dir=config_dir))
    cmd = [sys.executable, launcher, "--train-data", SHARDS, "--dataset-type", "webdataset", "--model", "tiny-RN",
           "--batch-size", str(args.batch_size), "--epochs", "1", "--workers", str(args.workers),
           "--precision", "fp32", "--warmup", "10", "--logs", os.path.join(work, "oc_logs"), "--name", "run",
           "--log-every-n-steps", "5", "--save-frequency", "0", "--device", "cpu"]
    _, whole, cpu = timed(cmd, work)
    log = open(os.path.join(work, "oc_logs", "run", "out.log")).read()
    rates = [float(x) for x in re.findall(r"([\d.]+)/s/gpu", log)][1:]
    samples = 2000 // args.batch_size * args.batch_size  # the 8 x 250 shards, whole batches
    return statistics.median(rates), samples / whole, samples / cpu


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    results = {"ours": [], "open_clip": []}
    for _ in range(args.runs):
        for name, fn in (("ours", run_ours), ("open_clip", run_open_clip)):
            work = tempfile.mkdtemp(prefix="bench_train_step_")
            try:
                results[name].append(fn(work, args))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(f"{name:9s} steps {results[name][-1][0]:7.1f}/s  whole {results[name][-1][1]:7.1f}/s  "
                  f"whole {results[name][-1][2]:7.1f}/cpu-s", flush=True)
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in results.items()}
    print(f"\nmedians over {args.runs} runs (tiny-RN, fp32, batch {args.batch_size}, {args.workers} worker), samples:")
    for k, (steps, whole, cpu) in med.items():
        print(f"  {k:9s} steps {steps:7.1f}/s   whole command {whole:7.1f}/s   {cpu:7.1f}/cpu-s")
    print("  ratio ours/open_clip: " + ", ".join(
        f"{m} {med['ours'][i] / med['open_clip'][i]:.2f}x" for i, m in enumerate(("steps", "whole", "cpu"))))


if __name__ == "__main__":
    main()
