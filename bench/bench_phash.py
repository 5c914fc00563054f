"""samples.phash_of_written vs imagehash.phash on the same written files: bit distances, CPU per image.

    python bench/bench_phash.py [--photos bench/work/photos] [--samples 3000]

Three kinds of input, each written as the shard writer writes it (resize.process_image: 256 px, border and
center_crop, jpg q95), then hashed both ways from the written bytes:
- photos: random crops (seeded; 30-100% of each side, anywhere, re-saved at jpg q70-95) of the real
  photographs that bench/fetch_dedup_photos.sh unpacks (Debian wallpapers, scikit-image samples);
- icons: the rendered icon and emoji PNGs under PHOTOS/icons (flat colours, sharp edges, white margins);
- synthetic: bench_fetch.py's photo-like JPEGs.
"Textured" leaves out images whose imagehash thumbnail is nearly flat (grey std < 4, dedup's MIN_THUMBNAIL_STD):
there the low DCT coefficients are all near zero and which side of the median they fall on is noise, for
imagehash itself too (one grey level moves it). Single thread; CPU time.
"""

import argparse
import collections
import glob
import io
import os
import sys
import time

import imagehash
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pipeline import resize  # noqa: E402
from pipeline.samples import PHASH_DRAFT_SIDE, phash_of_written  # noqa: E402


def images_under(folder: str) -> list[str]:
    return sorted(p for ext in ("jpg", "jpeg", "png", "webp")
                  for p in glob.glob(os.path.join(folder, "**", f"*.{ext}"), recursive=True))


def load_rgb(path: str) -> Image.Image:
    with Image.open(path) as im:
        im.draft("RGB", (1600, 1600))
        if im.mode in ("RGBA", "LA", "PA", "P"):  # transparency on white, as the pipeline does
            rgba = im.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, (255, 255, 255))
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            return canvas
        return im.convert("RGB")


def encoded(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def crops(paths: list[str], n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = [load_rgb(p) for p in paths]
    for i in range(n):
        im = images[i % len(images)]
        w, h = (max(16, int(side * rng.uniform(0.3, 1.0))) for side in im.size)
        x, y = int(rng.integers(0, im.width - w + 1)), int(rng.integers(0, im.height - h + 1))
        out = io.BytesIO()
        im.crop((x, y, x + w, y + h)).save(out, "JPEG", quality=int(rng.integers(70, 96)))
        yield out.getvalue()


def compare(name: str, inputs) -> None:
    written = [resize.process_image(data, resize.ImageOptions(resize_mode=mode)).data
               for data in inputs for mode in ("border", "center_crop")]
    old, new = [], []
    started = time.thread_time()
    for data in written:
        old.append(imagehash.phash(Image.open(io.BytesIO(data))))
    t_old = (time.thread_time() - started) / len(written)
    started = time.thread_time()
    for data in written:
        new.append(phash_of_written(data))
    t_new = (time.thread_time() - started) / len(written)
    same_decode = 0
    for data, value in zip(written, new):
        quarter = Image.open(io.BytesIO(data))
        quarter.draft("L", (PHASH_DRAFT_SIDE, PHASH_DRAFT_SIDE))
        same_decode += value == str(imagehash.phash(quarter))
    flat = [np.asarray(Image.open(io.BytesIO(d)).convert("L").resize((32, 32), Image.Resampling.LANCZOS),
                       dtype=np.float32).std() < 4 for d in written]
    print(f"{name}: {len(written)} written 256 px JPEGs, imagehash.phash {1000 * t_old:.3f} ms, "
          f"phash_of_written {1000 * t_new:.3f} ms per image; equal to imagehash.phash of the same reduced-scale "
          f"decode: {same_decode}/{len(written)}")
    for label, keep in (("all", lambda i: True), ("textured", lambda i: not flat[i])):
        distances = collections.Counter(bin(int(str(old[i]), 16) ^ int(new[i], 16)).count("1")
                                        for i in range(len(written)) if keep(i))
        total = sum(distances.values())
        print(f"  {label} ({total}): bits differing " + ", ".join(
            f"{d}: {n} ({100 * n / total:.1f}%)" for d, n in sorted(distances.items())))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default=os.path.join(HERE, "work", "photos"))
    p.add_argument("--samples", type=int, default=3000, help="photo crops")
    a = p.parse_args()
    photos = [x for x in images_under(a.photos) if os.sep + "icons" + os.sep not in x]
    icons = images_under(os.path.join(a.photos, "icons"))
    synthetic = images_under(os.path.join(HERE, "work", "fetch", "images"))
    print(f"{len(photos)} photos, {len(icons)} icons, {len(synthetic)} synthetic", flush=True)
    compare("photo crops", crops(photos, a.samples))
    compare("icons", (encoded(load_rgb(x)) for x in icons))
    compare("synthetic", (open(x, "rb").read() for x in synthetic))


if __name__ == "__main__":
    main()
