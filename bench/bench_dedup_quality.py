"""Near-duplicate detection quality on real photographs: recall per transformation family and the
false-positive rate on unrelated images, as a function of the Hamming threshold.

Photos come from packages only (fetch them with bench/fetch_dedup_photos.sh): Debian's mate-backgrounds and
ukui-wallpapers (photographic wallpapers) and the images scikit-image's wheel ships (skimage/data).

Every query goes through what the pipeline does to a sample before lookup: resize to 256 px, with a center
crop or with a border (padding) — so recall is measured on the image EvalIndex.lookup really sees.

    python bench/bench_dedup_quality.py --photos bench/work/photos
"""

import argparse
import glob
import io
import os
import sys
from collections import defaultdict

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dedup.image_hashes import eval_variants, sample_hash  # noqa: E402
from openwit.hashing import stable_uniform  # noqa: E402

# Photographs (not drawings), excluding files that are copies of each other (the Elephants wallpaper in three
# sizes, four tints of one Ubuntu MATE picture, the right view of the motorcycle stereo pair).
PHOTOS = [
    "x/usr/share/backgrounds/mate/nature/*.jpg",
    "x/usr/share/backgrounds/mate/abstract/Elephants.jpg",
    "x/usr/share/backgrounds/mate/desktop/GreenTraditional.jpg",
    "x/usr/share/backgrounds/mate/desktop/Ubuntu-Mate-Warm-no-logo.png",
    "x/usr/share/backgrounds/*.jpg",
    *[f"wheel/skimage/data/{n}" for n in (
        "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
        "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
        "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png")],
]
# Drawings and renders from the same packages: structured, unrelated images for the false-positive side.
DRAWINGS = [
    "x/usr/share/backgrounds/*.png",
    "x/usr/share/backgrounds/mate/abstract/*.png",
    "x/usr/share/backgrounds/mate/desktop/MATE-Stripes-Dark.png",
    "x/usr/share/backgrounds/mate/desktop/Float-into-MATE.png",
    *[f"wheel/skimage/data/{n}" for n in ("chessboard_RGB.png", "color.png", "logo.png", "phantom.png")],
]

MAX_SIDE = 1024  # eval sets hold images of ~256-1024 px (ImageNet, COCO); larger ones only slow hashing


def load(root: str, patterns: list[str]) -> dict[str, Image.Image]:
    images = {}
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            im = Image.open(path)
            im = im.convert("RGBA").convert("RGB") if im.mode in ("RGBA", "LA", "P") else im.convert("RGB")
            im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            images[os.path.relpath(path, root)] = im
    return images


def pipeline_resize(im: Image.Image, mode: str, size: int = 256) -> Image.Image:
    """What the pipeline writes: shorter side to `size` then center crop, or longer side + black border."""
    if mode == "center_crop":
        return ImageOps.fit(im, (size, size), Image.Resampling.LANCZOS)
    return ImageOps.pad(im, (size, size), Image.Resampling.LANCZOS, color=(0, 0, 0))


def u(*parts) -> float:
    return stable_uniform("bench_dedup_quality", *parts)


def encode(im: Image.Image, fmt: str, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, fmt, quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def transform(im: Image.Image, family: str, key: str) -> Image.Image:
    w, h = im.size
    if family == "resize":
        scale = 0.2 + 0.6 * u(key, "s")
        return im.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.Resampling.BICUBIC)
    if family == "jpeg":
        return encode(im, "JPEG", 25 + round(65 * u(key, "q")))
    if family == "webp":
        return encode(im, "WEBP", 25 + round(65 * u(key, "q")))
    if family in ("crop5", "crop10"):
        keep = 0.95 if family == "crop5" else 0.90
        cw, ch = round(w * keep), round(h * keep)
        left, top = round((w - cw) * u(key, "x")), round((h - ch) * u(key, "y"))
        return im.crop((left, top, left + cw, top + ch))
    if family == "flip":
        return ImageOps.mirror(im)
    if family == "brightness_contrast":
        im = ImageEnhance.Brightness(im).enhance(0.7 + 0.6 * u(key, "b"))
        return ImageEnhance.Contrast(im).enhance(0.7 + 0.6 * u(key, "c"))
    if family == "overlay_text":
        im = im.copy()
        draw = ImageDraw.Draw(im)
        size = max(10, h // 16)
        x, y = round(w * 0.6 * u(key, "x")), round(h * 0.85 * u(key, "y"))
        draw.text((x, y), "© stock photo 2024", fill=(255, 255, 255), font_size=size, stroke_width=1,
                  stroke_fill=(0, 0, 0))
        return im
    raise ValueError(family)


FAMILIES = ["resize", "jpeg", "webp", "crop5", "crop10", "flip", "brightness_contrast", "overlay_text"]


def patches(images: dict[str, Image.Image], per_image: int) -> list[Image.Image]:
    """Unrelated real images: crops of 20-45% of a photo's side, a different picture from the whole."""
    out = []
    for name, im in images.items():
        w, h = im.size
        for i in range(per_image):
            side = round(min(w, h) * (0.2 + 0.25 * u(name, i, "side")))
            left, top = round((w - side) * u(name, i, "x")), round((h - side) * u(name, i, "y"))
            out.append(im.crop((left, top, left + side, top + side)))
    return out


def synthetic(n: int) -> list[Image.Image]:
    """Structured images a web crawl is full of: gradients, stripes, checkerboards, text on flat colour."""
    out = []
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    for i in range(n):
        kind = i % 4
        a, b, c = (u("syn", i, k) for k in "abc")
        if kind == 0:
            angle = 2 * np.pi * a
            g = (np.cos(angle) * xx + np.sin(angle) * yy) / 362 + 0.5
            arr = np.stack([g * 255 * b, g * 255, (1 - g) * 255 * c], -1)
        elif kind == 1:
            period = 4 + 60 * a
            s = (np.sin(2 * np.pi * (xx * np.cos(b * 3) + yy * np.sin(b * 3)) / period) > 0) * 255.0
            arr = np.stack([s, s * c, 255 - s], -1)
        elif kind == 2:
            cell = 4 + int(60 * a)
            s = (((xx // cell) + (yy // cell)) % 2) * 255.0
            arr = np.stack([s * b, s, s * c], -1)
        else:
            arr = np.zeros((256, 256, 3), np.float32) + np.array([255 * a, 255 * b, 255 * c])
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        if kind == 3:
            ImageDraw.Draw(im).text((10 + 100 * a, 60 + 100 * b), f"Sale {i}% off", fill=(255, 255, 255),
                                    font_size=20 + int(30 * c))
        out.append(im)
    return out


def min_distances(codes: np.ndarray, items: np.ndarray, n_items: int, query: int | None) -> np.ndarray:
    """Per eval item, the smallest Hamming distance from the query to any of its stored variants."""
    best = np.full(n_items, 65, dtype=np.int64)
    if query is None:
        return best
    d = np.bitwise_count(codes ^ np.uint64(query)).astype(np.int64)
    np.minimum.at(best, items, d)
    return best


def build(images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    codes, items = [], []
    for i, im in enumerate(images):
        for _, code in eval_variants(im):
            codes.append(code)
            items.append(i)
    return np.array(codes, dtype=np.uint64), np.array(items, dtype=np.int64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default="bench/work/photos")
    ap.add_argument("--per-family", type=int, default=3, help="random transforms per photo and family")
    ap.add_argument("--patches", type=int, default=40, help="unrelated patches per image")
    ap.add_argument("--synthetic", type=int, default=400)
    args = ap.parse_args(argv)

    photos = load(args.photos, PHOTOS)
    drawings = load(args.photos, DRAWINGS)
    names = sorted(photos)
    print(f"{len(photos)} photos, {len(drawings)} drawings", file=sys.stderr)
    codes, items = build([photos[n] for n in names])
    print(f"index: {len(codes)} hashes for {len(names)} eval photos", file=sys.stderr)

    # Recall: distance of each transformed, pipeline-resized copy to its own eval item.
    true_d = defaultdict(list)
    for i, name in enumerate(names):
        for family in FAMILIES:
            for k in range(args.per_family):
                for mode in ("center_crop", "border"):
                    q = sample_hash(pipeline_resize(transform(photos[name], family, f"{name}/{k}"), mode))
                    true_d[(family, mode)].append(min_distances(codes, items, len(names), q)[i])

    # False positives: unrelated images against all eval photos (split so patches never query their own
    # photo), and pairs of unrelated images against each other for a per-pair rate.
    half_a = [n for n in names if u(n, "split") < 0.5]
    half_b = [n for n in names if n not in half_a]
    fp_query_min = []  # per unrelated query, min distance to any eval photo it is unrelated to
    for src, dst in ((half_a, half_b), (half_b, half_a)):
        dst_idx = np.array([names.index(n) for n in dst])
        keep = np.isin(items, dst_idx)
        sub_codes, sub_items = codes[keep], items[keep]
        unrelated = patches({n: photos[n] for n in src}, args.patches)
        for im in unrelated:
            q = sample_hash(pipeline_resize(im, "center_crop"))
            fp_query_min.append(min_distances(sub_codes, sub_items, len(names), q)[dst_idx].min())
    others = patches(drawings, args.patches // 4) + list(drawings.values()) + synthetic(args.synthetic)
    for im in others:
        q = sample_hash(pipeline_resize(im, "center_crop"))
        fp_query_min.append(min_distances(codes, items, len(names), q).min())
    fp_query_min = np.array(fp_query_min)

    print(f"\nrecall by threshold (queries per family and resize mode: {args.per_family * len(names)}); "
          f"false-positive rate over {len(fp_query_min)} unrelated images vs {len(names)} eval photos")
    thresholds = list(range(0, 17, 2))
    header = "| family | resize | " + " | ".join(f"d≤{t}" for t in thresholds) + " |"
    print(header)
    print("|" + "---|" * (len(thresholds) + 2))
    for (family, mode), d in true_d.items():
        d = np.array(d)
        print(f"| {family} | {mode} | " + " | ".join(f"{(d <= t).mean():.3f}" for t in thresholds) + " |")
    print("| **false positives** | unrelated | "
          + " | ".join(f"{(fp_query_min <= t).mean():.4f}" for t in thresholds) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
