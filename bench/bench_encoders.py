"""Forward throughput of our CLIP against open_clip's, same weights, same batch, same precision, one process.

For each model (RN50, ViT-B/32 by default) both implementations get identical random weights (copied from ours
into open_clip's, strictly), then encode_image on a batch of images and encode_text on a batch of captions are
timed, alternating which goes first in each run; medians over the runs and the ratio ours/open_clip in items/s.
"texts" are captions of 8-11 tokens (as alt texts are); "texts77" fill the whole 77-token context.
Outputs are checked to agree before timing. No weights are downloaded (open_clip's pretrained=None).

    python bench/bench_encoders.py [--models RN50 ViT-B/32] [--image-batch 16] [--text-batch 64] [--runs 7]
                                   [--device cpu|cuda] [--precision fp32|bf16|fp16] [--threads N]
"""

import argparse
import contextlib
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import encoders  # noqa: E402
from open_clip_compat import open_clip_model  # noqa: E402

CAPTIONS = [
    "a photo of a dog playing in the snow",
    "Tokyo skyline at night, seen from the river",
    "a red bicycle leaning against a brick wall",
    "two cats asleep on a sofa",
]


def autocast(device, precision):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


def timed(fn, device):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_model(name, args):
    ours = encoders.create(name).to(args.device).eval()
    theirs = open_clip_model(name).to(args.device).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    size = ours.visual.input_resolution
    images = torch.randn(args.image_batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(args.device)
    tokens = encoders.tokenize((CAPTIONS * args.text_batch)[: args.text_batch]).to(args.device)
    # Texts that fill all 77 positions: nothing to cut after the end token, the Transformer alone is compared.
    full = encoders.tokenize([" ".join(["word"] * 100)] * args.text_batch).to(args.device)
    models = {"ours": ours, "open_clip": theirs}
    results = {}
    with torch.inference_mode(), autocast(args.device, args.precision):
        a, b = ours.encode_image(images), theirs.encode_image(images)
        assert torch.allclose(a.float(), b.float(), rtol=0.05, atol=0.05), "image features disagree"
        a, b = ours.encode_text(tokens), theirs.encode_text(tokens)
        assert torch.allclose(a.float(), b.float(), rtol=0.05, atol=0.05), "text features disagree"
        for what, batch, call in (
            ("images", images, lambda m: m.encode_image(images)),
            ("texts", tokens, lambda m: m.encode_text(tokens)),
            ("texts77", full, lambda m: m.encode_text(full)),
        ):
            for model in models.values():  # warm-up: kernel selection, allocator, caches
                call(model)
            times = {key: [] for key in models}
            for run in range(args.runs):
                order = list(models) if run % 2 == 0 else list(models)[::-1]
                for key in order:
                    times[key].append(timed(lambda: call(models[key]), args.device))
            rates = {key: len(batch) / statistics.median(t) for key, t in times.items()}
            results[what] = rates
            print(
                f"{name:9} {what:7} ours {rates['ours']:9.1f}/s  open_clip {rates['open_clip']:9.1f}/s  "
                f"ratio {rates['ours'] / rates['open_clip']:.2f}x  (batch {len(batch)}, {args.runs} runs)",
                flush=True,
            )
    return results


def machine(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model}, {torch.get_num_threads()} threads"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["RN50", "ViT-B/32"])
    parser.add_argument("--image-batch", type=int, default=16)
    parser.add_argument("--text-batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {machine(args.device)}, {args.device} {args.precision}", flush=True)
    rows = []
    for name in args.models:
        for what, rates in bench_model(name, args).items():
            rows.append((name, what, rates))
    print("\n| model | input | batch | ours /s | open_clip /s | ratio |\n|---|---|---|---|---|---|")
    for name, what, rates in rows:
        batch = args.image_batch if what == "images" else args.text_batch
        print(f"| {name} | {what} | {batch} | {rates['ours']:.1f} | {rates['open_clip']:.1f} | "
              f"{rates['ours'] / rates['open_clip']:.2f}x |")


if __name__ == "__main__":
    main()
