"""Lookup cost per sample (retrieval + verification) against a real eval index, and how many candidate items
the pHash retrieval hands to verification: the figure that decides whether decontamination keeps up with a
shard writer when eval set and samples are flat graphics, whose pHashes crowd together.

    openwit eval-index --eval-set icons=eval.csv --output icons.npz      # e.g. 5,000 rendered icons
    python bench/bench_dedup_lookup.py --index icons.npz --images other-icons.txt [--limit 200]

--images is a text file of image paths not in the index (unrelated samples); each is flattened on white and
padded to 256 px, as the pipeline's border resize writes it. One core, one sample per lookup. With
--no-prefilter every candidate item is verified (the lookup before the pre-filter).
"""

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dedup import image_hashes, verify  # noqa: E402
from dedup.eval_index import EvalIndex  # noqa: E402


def as_sample(path: str) -> Image.Image:
    image = Image.open(path).convert("RGBA")
    flat = Image.new("RGB", image.size, "white")
    flat.paste(image, mask=image.split()[3])
    return ImageOps.pad(flat, (256, 256), color="white")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True)
    ap.add_argument("--images", required=True, help="text file, one image path a line")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--no-prefilter", action="store_true", help="verify every candidate item (as before the "
                    "pre-filter), for a side-by-side figure")
    args = ap.parse_args(argv)
    if args.no_prefilter:
        verify.PREFILTER, verify.MAX_VERIFIED = -2.0, 10**9
    index = EvalIndex.load(args.index)
    samples = [as_sample(p) for p in open(args.images).read().split()[:args.limit]]
    index.lookup_many(samples[:2])  # compiles the kernels before timing
    candidates, verified, millis, cpu = [], [], [], []
    for sample in samples:
        codes = image_hashes.sample_hashes(sample)
        items = np.zeros(0, dtype=np.int64)
        if codes:
            _, ids, _ = index._hamming.query_many(np.array(codes, dtype=np.uint64), index.radius)
            items = np.unique(index.code_item[ids])
        candidates.append(len(items))
        scores = verify.prefilter(verify.sample_signature(verify.sample_features(sample)), index.signatures[items],
                                  index.aspects[items])[0] if len(items) else np.zeros(0)
        verified.append(min(int((scores >= verify.PREFILTER).sum()), verify.MAX_VERIFIED))
        started, cpu_started = time.perf_counter(), time.process_time()
        index.lookup_many([sample])
        millis.append(1000 * (time.perf_counter() - started))
        cpu.append(1000 * (time.process_time() - cpu_started))
    c, v, t, p = np.array(candidates), np.array(verified), np.array(millis), np.array(cpu)
    print(f"{len(samples)} samples against {len(index)} eval items ({len(index.codes)} hashes, radius {index.radius})")
    print("| | median | p90 | max |\n|---|---|---|---|")
    print(f"| candidate items per sample | {np.median(c):.0f} | {np.percentile(c, 90):.0f} | {c.max()} |")
    print(f"| items verified per sample | {np.median(v):.0f} | {np.percentile(v, 90):.0f} | {v.max()} |")
    print(f"| ms per sample | {np.median(t):.1f} | {np.percentile(t, 90):.1f} | {t.max():.0f} |")
    print(f"| CPU-ms per sample | {np.median(p):.1f} | {np.percentile(p, 90):.1f} | {p.max():.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
