"""Training loader throughput: training/data.py against open_clip's trainer loader (the `webdataset` library with
open_clip's transforms and tokenizer, `open_clip_train.data.get_wds_dataset`), on the same shards.

    sh bench/fetch_dedup_photos.sh           # real photographs, from Debian packages
    python bench/bench_train_loader.py --runs 5

The shards are what `openwit build` writes by default (256x256 JPEG, quality 95, through pipeline/resize.py),
made from random crops of the photographs. Each run is its own process on ONE core (OMP_NUM_THREADS=1, no
loader workers): read + decode + RandomResizedCrop(224, scale 0.9-1) + normalise + tokenize + batch.
Both sides output what the model takes; ours ships uint8 from its workers and normalises after (on the GPU
when training there; here on the CPU, counted). Reported: samples per CPU-second (= samples/s per core,
what a machine shared with other jobs can still measure) of the loop and of the whole command (imports and
start-up included), and wall-clock samples/s; medians over --runs, alternating the two loaders.

open_clip_train 3.3.0 needs webdataset <= 0.2.86; with webdataset 1.0 (ours) its group_by_keys_nothrow
fails with KeyError 'fname' on the end-of-shard marker ({}) that webdataset 1.0's tar_file_expander yields.
The peer here passes eof_value=None to tar_file_expander, which restores the 0.2 behaviour.
"""

import argparse
import glob
import io
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "work", "train_loader")


def make_shards(photos: str, n_shards: int, per_shard: int) -> str:
    """Shards as the pipeline writes them (tar + parquet + sizes.json), each sample a random crop of a photo
    resized and encoded by pipeline/resize.py with its defaults."""
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from PIL import Image

    from pipeline import resize
    import train_helpers

    out = os.path.join(WORK, f"shards_{n_shards}x{per_shard}")
    pattern = os.path.join(out, "shards", "{%05d..%05d}.tar" % (0, n_shards - 1))
    if os.path.exists(os.path.join(out, "sizes.json")):
        return pattern
    files = sorted(glob.glob(os.path.join(photos, "**", "*.jpg"), recursive=True))
    if not files:
        sys.exit(f"no photographs under {photos}: run `sh bench/fetch_dedup_photos.sh` first")
    images = []
    for path in files[:24]:
        img = Image.open(path).convert("RGB")
        img.thumbnail((1024, 1024))
        images.append(img)
    rng = random.Random(0)
    options = resize.ImageOptions()

    def jpeg(colour, size, index):  # replaces the helper's flat colour images with photo crops
        img = images[index % len(images)]
        w, h = img.size
        cw, ch = rng.randint(w // 3, w), rng.randint(h // 3, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        buf = io.BytesIO()
        img.crop((x, y, x + cw, y + ch)).save(buf, "JPEG", quality=95)
        return resize.process_image(buf.getvalue(), options).data

    train_helpers.jpeg = jpeg
    train_helpers.make_shards(out, n_shards=n_shards, per_shard=per_shard)
    return pattern


def run_ours(pattern: str, batch: int) -> tuple[int, float]:
    import encoders
    from training import data
    from training.train import TextTokenizer

    loader = data.make_loader(pattern, batch_size=batch, tokenizer=TextTokenizer(encoders.Tokenizer(), 77),
                              image_size=224, num_workers=0)
    loader.set_epoch(0)
    start, cpu, n = time.perf_counter(), time.process_time(), 0
    for b in loader:
        images = data.to_model_input(b["images"], "cpu")  # the normalisation the GPU would do, on the CPU
        n += images.shape[0]
    return n, time.perf_counter() - start, time.process_time() - cpu


def run_open_clip(pattern: str, batch: int) -> tuple[int, float]:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from open_clip_compat import import_open_clip

    open_clip = import_open_clip()
    import functools

    import open_clip_train.data as ocd
    from webdataset.tariterators import tar_file_expander

    ocd.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)  # see the module docstring
    args = argparse.Namespace(
        train_data=pattern, val_data=None, train_num_samples=None, dataset_resampled=False, seed=0,
        batch_size=batch, workers=0, world_size=1, train_data_upsampling_factors=None)
    preprocess = open_clip.image_transform(224, is_train=True)  # RandomResizedCrop(0.9-1), bicubic, normalise
    info = ocd.get_wds_dataset(args, preprocess, is_train=True, tokenizer=open_clip.get_tokenizer("ViT-B-32"))
    start, cpu, n = time.perf_counter(), time.process_time(), 0
    for images, _texts in info.dataloader:
        n += images.shape[0]
    return n, time.perf_counter() - start, time.process_time() - cpu


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--per-shard", type=int, default=250)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--photos", default=os.path.join(HERE, "work", "photos"))
    p.add_argument("--one", choices=("ours", "open_clip"), help=argparse.SUPPRESS)
    p.add_argument("--pattern", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        n, seconds, cpu = (run_ours if args.one == "ours" else run_open_clip)(args.pattern, args.batch_size)
        print(json.dumps({"samples": n, "seconds": seconds, "cpu_seconds": cpu}))
        return
    pattern = make_shards(args.photos, args.shards, args.per_shard)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=ROOT)
    results = {"ours": [], "open_clip": []}
    for _ in range(args.runs):
        for name in results:
            start, cpu_before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            out = subprocess.run([sys.executable, __file__, "--one", name, "--pattern", pattern,
                                  "--batch-size", str(args.batch_size)], env=env, capture_output=True, text=True)
            whole = time.perf_counter() - start
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            whole_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
            if out.returncode != 0:
                sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            n = r["samples"]
            results[name].append({"loop/cpu-s": n / r["cpu_seconds"], "command/cpu-s": n / whole_cpu,
                                  "loop/s": n / r["seconds"], "command/s": n / whole})
            print(f"{name:9s} {n} samples  " + "  ".join(f"{k} {v:7.1f}" for k, v in results[name][-1].items()),
                  flush=True)
    print(f"\nmedians over {args.runs} runs, one core, batch {args.batch_size}, "
          f"{args.shards}x{args.per_shard} samples of 256x256 JPEG (samples per CPU-second, and per wall second):")
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    for k, v in med.items():
        print(f"  {k:9s} " + "  ".join(f"{m} {x:7.1f}" for m, x in v.items()))
    print("  ratio ours/open_clip: " + "  ".join(
        f"{m} {med['ours'][m] / med['open_clip'][m]:.2f}x" for m in med["ours"]))


if __name__ == "__main__":
    main()
