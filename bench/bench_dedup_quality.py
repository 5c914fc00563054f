"""Near-duplicate detection quality with hard negatives: recall per transformation family and false-positive
rate per kind of unrelated image, for retrieval alone (pHash radius) and for retrieval + verification.

Images come from packages only (bench/fetch_dedup_photos.sh, then bench/render_icons.sh):
- photos: Debian's mate-backgrounds and ukui-wallpapers;
- icons: papirus-icon-theme and breeze-icon-theme rendered to 128 px on white, and Adwaita's PNGs;
- emoji and flags: the Noto colour emoji font (flags are its regional-indicator pairs);
- text and charts: text on a plain colour and bar charts, drawn here.
Each kind is split by a stable hash: most of it forms the eval set, the rest is the unrelated background.
Eval sets of 1k and 10k items are nested (the 1k set is a part of the 10k one). The pool holds ~11k real eval
items; `--generated N` appends N drawn flat graphics (shapes, banners, charts) after them, so larger sets nest
the smaller ones, e.g. `--eval-items 100000 --generated 88860` (11,140 real items at --background 150).

Every query goes through the pipeline's own resize and encode (pipeline/resize.py: 256 px, center crop or
border, JPEG q95) and is decoded back, so what is measured is what the shard holds.

    python bench/bench_dedup_quality.py --photos bench/work/photos --eval-items 10000
"""

import argparse
import contextlib
import glob
import io
import multiprocessing
import os
import re
import sys
import time
from collections import defaultdict

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dedup import verify  # noqa: E402
from dedup.hamming_index import HammingIndex  # noqa: E402
from dedup.image_hashes import eval_variants, sample_hashes  # noqa: E402
from openwit.hashing import stable_uniform  # noqa: E402
from pipeline.resize import ImageOptions, process_image  # noqa: E402

MAX_SIDE = 512
COLOUR_GATE = 0.8  # pixels and edges are computed only for pairs whose aligned colour score reaches this
# Unrelated pairs whose pre-filter score (verify.prefilter) is below this are not aligned at all (the bench's own
# shortcut: every column below asks for a pre-filter score of at least this).
PREFILTER_GATE = 0.6
RANK_RADIUS = 12  # the cap on verified items ranks the candidates retrieved at the index's default radius
TIGHT_TOLERANCE = 24.0  # the pixel share is also measured at this colour tolerance (verify's default: 32)
# Background images whose 16x16 colour grid is within this RMS (of 255 levels) of an eval item's, as is or
# mirrored, are copies inside the pool itself (duplicate glyphs in the icon themes): not unrelated images.
SELF_DUPLICATE_RMS = 6.0
TEMPLATE_FAMILY = re.compile(r"_places_(\d+_)?(folder|user)|_mimetypes_")


def u(*parts) -> float:
    return stable_uniform("bench_dedup_quality", *parts)


def flatten(im: Image.Image) -> Image.Image:
    """RGB on white: icons and emoji are transparent, and sit on white pages."""
    if im.mode in ("RGBA", "LA", "P", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


def load_files(paths: list[str]) -> list[tuple[str, Image.Image]]:
    out = []
    for path in paths:
        try:
            im = flatten(Image.open(path))
        except Exception:
            continue
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        out.append((path, im))
    return out


def emoji(font_path: str) -> tuple[list, list]:
    """(emoji, flags) rendered from the colour font; codepoints without a glyph are skipped."""
    font = ImageFont.truetype(font_path, 109)

    def render(text):
        im = Image.new("RGBA", (160, 136), (255, 255, 255, 0))
        ImageDraw.Draw(im).text((0, 0), text, font=font, embedded_color=True)
        box = im.getbbox()
        return None if box is None else flatten(im.crop(box))

    tofu = np.asarray(render(chr(0x10FFFD)) or Image.new("RGB", (1, 1)))
    singles, flags = [], []
    for cp in list(range(0x1F300, 0x1FAFF)) + list(range(0x2600, 0x27C0)):
        if 0x1F3FB <= cp <= 0x1F3FF or 0x1F1E6 <= cp <= 0x1F1FF:
            continue  # skin tones (copies of another emoji) and regional indicators
        im = render(chr(cp))
        if im is not None and (im.size != tofu.shape[1::-1] or not np.array_equal(np.asarray(im), tofu)):
            singles.append((f"U+{cp:X}", im))
    unknown = np.asarray(render(chr(0x1F1F6) * 2))  # QQ is no country: the font draws a flag with a "?"
    for a in range(26):
        for b in range(26):
            im = render(chr(0x1F1E6 + a) + chr(0x1F1E6 + b))
            if im.size != unknown.shape[1::-1] or not np.array_equal(np.asarray(im), unknown):
                flags.append((f"flag {chr(65 + a)}{chr(65 + b)}", im))
    return singles, flags


WORDS = ["Sale", "Open", "Welcome", "Menu", "News", "Contact us", "Free shipping", "Login", "Team", "Events",
         "Download", "Subscribe", "Best price", "About", "Careers", "Support", "Blog", "Shop now", "Gallery"]


def text_images(n: int) -> list:
    out = []
    for i in range(n):
        bg = tuple(int(255 * u("tx", i, k)) for k in "rgb")
        fg = (255, 255, 255) if sum(bg) < 380 else (0, 0, 0)
        w, h = (400, 120) if u("tx", i, "shape") < 0.5 else (300, 300)
        im = Image.new("RGB", (w, h), bg)
        text = f"{WORDS[i % len(WORDS)]} {int(100 * u('tx', i, 'n'))}"
        ImageDraw.Draw(im).text((10 + 60 * u("tx", i, "x"), 20 + 40 * u("tx", i, "y")), text, fill=fg,
                                font_size=28 + int(30 * u("tx", i, "s")))
        out.append((f"text {i}", im))
    return out


def charts(n: int) -> list:
    out = []
    for i in range(n):
        im = Image.new("RGB", (320, 240), (255, 255, 255))
        d = ImageDraw.Draw(im)
        d.line((30, 10, 30, 210, 310, 210), fill=(0, 0, 0), width=2)
        bars = 3 + int(8 * u("ch", i, "bars"))
        colour = tuple(int(200 * u("ch", i, k)) for k in "rgb")
        width = 270 // bars
        for b in range(bars):
            top = 200 - int(180 * u("ch", i, b))
            d.rectangle((36 + b * width, top, 30 + (b + 1) * width, 209), fill=colour)
        out.append((f"chart {i}", im))
    return out


# Generated flat graphics (--generated): distinct items beyond the ~12k the packages give, so that the eval set
# can reach 100k. Everything is drawn from u() of the item's key, so item i is the same image on every run.
GEN_KINDS = [("gen_shapes", 0.5), ("gen_text", 0.3), ("gen_chart", 0.2)]
GEN_CANVASES = [(256, 256), (320, 240), (240, 320), (400, 200), (300, 300), (200, 200)]
SHAPES = ["circle", "rounded_square", "triangle", "star", "ring", "line"]
_CONSONANTS, _VOWELS, _CODAS = "bcdfghjklmnprstvwz", "aeiouy", ["", "", "", "n", "r", "s", "t", "l", "m", "ck", "sh"]
_FONTS = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/*.ttf"))


def _pick(seq, *key):
    return seq[min(len(seq) - 1, int(len(seq) * u(*key)))]


def _colour(*key) -> tuple[int, int, int]:
    return tuple(int(255 * u(*key, c)) for c in "rgb")


def _backdrop(*key) -> tuple[int, int, int]:
    """White for half the images (icons, clip art), else a plain colour."""
    return (255, 255, 255) if u(*key, "white") < 0.5 else _colour(*key, "bg")


def gen_word(*key) -> str:
    """A pronounceable made-up word of 1-3 syllables (the machine has no word list: no /usr/share/dict)."""
    out = ""
    for s in range(1 + int(3 * u(*key, "syl"))):
        out += _pick(_CONSONANTS, *key, s, "c") + _pick(_VOWELS, *key, s, "v")
    return out + _pick(_CODAS, *key, "coda")


def gen_shapes(key: str) -> Image.Image:
    """1-4 shapes (circles, rounded squares, triangles, stars, rings, lines), drawn at 2x and reduced (smooth
    edges, as rendered icons have)."""
    w, h = _pick(GEN_CANVASES, key, "canvas")
    im = Image.new("RGB", (2 * w, 2 * h), _backdrop(key))
    d = ImageDraw.Draw(im)
    side = 2 * min(w, h)
    for s in range(1 + int(4 * u(key, "count"))):
        shape, fill = _pick(SHAPES, key, s, "shape"), _colour(key, s, "fill")
        r = side * (0.08 + 0.3 * u(key, s, "size"))
        cx, cy = 2 * w * (0.15 + 0.7 * u(key, s, "x")), 2 * h * (0.15 + 0.7 * u(key, s, "y"))
        turn = 2 * np.pi * u(key, s, "turn")
        if shape == "circle":
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif shape == "rounded_square":
            d.rounded_rectangle((cx - r, cy - r, cx + r, cy + r), radius=r * 0.4 * u(key, s, "round"), fill=fill)
        elif shape == "triangle":
            d.polygon([(cx + r * np.cos(turn + k * 2 * np.pi / 3), cy + r * np.sin(turn + k * 2 * np.pi / 3))
                       for k in range(3)], fill=fill)
        elif shape == "star":
            points = 5 + int(4 * u(key, s, "points"))
            d.polygon([(cx + r * (1 if k % 2 == 0 else 0.45) * np.cos(turn + k * np.pi / points),
                        cy + r * (1 if k % 2 == 0 else 0.45) * np.sin(turn + k * np.pi / points))
                       for k in range(2 * points)], fill=fill)
        elif shape == "ring":
            ring = max(2, int(r * (0.1 + 0.3 * u(key, s, "w"))))
            d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=ring)
        else:
            dx, dy = r * np.cos(turn), r * np.sin(turn)
            d.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=fill, width=max(2, int(side * 0.06 * u(key, s, "w"))))
    return im.resize((w, h), Image.Resampling.LANCZOS)


def gen_text(key: str) -> Image.Image:
    """A banner: 1-3 made-up words (and maybe a number) in one of the DejaVu fonts, on a plain colour, with an
    optional second line, frame or underline."""
    w, h = _pick([(400, 120), (300, 300), (480, 160), (320, 100), (256, 256)], key, "canvas")
    bg = _colour(key, "bg") if u(key, "white") < 0.75 else (255, 255, 255)
    fg = (255, 255, 255) if sum(bg) < 380 else (0, 0, 0)
    if u(key, "fgc") < 0.3:
        fg = _colour(key, "fg")
    im = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(im)
    words = [gen_word(key, k) for k in range(1 + int(3 * u(key, "words")))]
    words = [x.capitalize() if u(key, k, "cap") < 0.6 else x.upper() if u(key, k, "cap") < 0.8 else x
             for k, x in enumerate(words)]
    text = " ".join(words) + (f" {int(1000 * u(key, 'n'))}" if u(key, "num") < 0.3 else "")
    size = int(h * (0.15 + 0.25 * u(key, "size")))
    font = ImageFont.truetype(_pick(_FONTS, key, "font"), size) if _FONTS else None
    x, y = w * 0.3 * u(key, "x"), h * 0.5 * u(key, "y")
    d.text((x, y), text, fill=fg, font=font, font_size=None if font else size)
    if u(key, "line2") < 0.4:
        small = ImageFont.truetype(_pick(_FONTS, key, "font2"), max(10, size // 2)) if _FONTS else None
        d.text((x, y + size * 1.3), " ".join(gen_word(key, "l2", k) for k in range(3)), fill=fg, font=small)
    deco = u(key, "deco")
    if deco < 0.25:
        d.rectangle((4, 4, w - 5, h - 5), outline=fg, width=2 + int(6 * u(key, "fw")))
    elif deco < 0.45:
        d.line((x, y + size * 1.15, min(w - 5, x + w * 0.6), y + size * 1.15), fill=fg, width=3)
    return im


def gen_chart(key: str) -> Image.Image:
    """A bar chart (vertical or horizontal, one or several colours), a line chart or a pie chart."""
    w, h = _pick([(320, 240), (400, 300), (300, 300), (480, 240)], key, "canvas")
    im = Image.new("RGB", (w, h), (255, 255, 255) if u(key, "white") < 0.7 else _colour(key, "bg"))
    d = ImageDraw.Draw(im)
    style, colour = u(key, "style"), _colour(key, "c")
    n = 3 + int(9 * u(key, "n"))
    values = [0.1 + 0.9 * u(key, "v", k) for k in range(n)]
    if style < 0.25:  # pie
        r, cx, cy, start = 0.4 * min(w, h), w / 2, h / 2, 360 * u(key, "start")
        total = sum(values)
        for k, v in enumerate(values):
            end = start + 360 * v / total
            d.pieslice((cx - r, cy - r, cx + r, cy + r), start, end, fill=_colour(key, "p", k))
            start = end
        return im
    left, bottom = 20 + int(30 * u(key, "left")), h - 20 - int(30 * u(key, "bottom"))
    d.line((left, 10, left, bottom, w - 10, bottom), fill=(0, 0, 0), width=2)
    if u(key, "grid") < 0.4:
        for g in range(1, 5):
            yy = bottom - g * (bottom - 10) / 5
            d.line((left, yy, w - 10, yy), fill=(200, 200, 200), width=1)
    many = u(key, "many") < 0.4
    if style < 0.5:  # line chart
        pts = [(left + 5 + k * (w - left - 20) / (n - 1), bottom - 5 - v * (bottom - 20)) for k, v in enumerate(values)]
        d.line(pts, fill=colour, width=2 + int(4 * u(key, "lw")))
        if u(key, "markers") < 0.5:
            for px, py in pts:
                d.ellipse((px - 4, py - 4, px + 4, py + 4), fill=colour)
        return im
    if style < 0.75:  # vertical bars
        width = (w - left - 15) / n
        for k, v in enumerate(values):
            d.rectangle((left + 4 + k * width, bottom - v * (bottom - 15), left + (k + 1) * width - 2, bottom - 1),
                        fill=_colour(key, "b", k) if many else colour)
        return im
    height = (bottom - 15) / n  # horizontal bars
    for k, v in enumerate(values):
        d.rectangle((left + 1, 12 + k * height, left + 1 + v * (w - left - 20), 10 + (k + 1) * height - 2),
                    fill=_colour(key, "b", k) if many else colour)
    return im


GEN_DRAW = {"gen_shapes": gen_shapes, "gen_text": gen_text, "gen_chart": gen_chart}


def generated(i: int) -> tuple[str, str]:
    """(kind, name) of generated eval item i; its image is GEN_DRAW[kind](name)."""
    kind = "gen_chart"
    x = u("gen", i, "kind")
    for k, share in GEN_KINDS:
        if x < share:
            kind = k
            break
        x -= share
    return kind, f"{kind} {i}"


def eval_image(entry: tuple) -> Image.Image:
    """An eval entry's image: held for the real ones, drawn again for generated ones (not kept: 100k of them)."""
    kind, name, im = entry
    return GEN_DRAW[kind](name) if im is None else im


def encode(im: Image.Image, fmt: str, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, fmt, quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def transform(im: Image.Image, family: str, key: str) -> Image.Image:
    w, h = im.size
    if family == "resize_recompress":
        scale = 0.5 + 0.5 * u(key, "s")
        small = im.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.Resampling.BICUBIC)
        return encode(small, "JPEG", 30 + round(60 * u(key, "q")))
    if family == "webp":
        return encode(im, "WEBP", 30 + round(60 * u(key, "q")))
    if family in ("crop5", "crop10"):
        keep = 0.95 if family == "crop5" else 0.90
        cw, ch = round(w * keep), round(h * keep)
        left, top = round((w - cw) * u(key, "x")), round((h - ch) * u(key, "y"))
        return im.crop((left, top, left + cw, top + ch))
    if family == "crop10_offcentre":  # 10% off two adjacent sides: a corner crop
        cw, ch = round(w * 0.9), round(h * 0.9)
        left, top = (w - cw) * round(u(key, "x")), (h - ch) * round(u(key, "y"))
        return im.crop((left, top, left + cw, top + ch))
    if family == "flip":
        return ImageOps.mirror(im)
    if family == "brightness_contrast":
        im = ImageEnhance.Brightness(im).enhance(0.8 + 0.4 * u(key, "b"))
        return ImageEnhance.Contrast(im).enhance(0.8 + 0.4 * u(key, "c"))
    if family == "overlay_text":
        im = im.copy()
        draw = ImageDraw.Draw(im)
        size = max(8, h // 14)
        x, y = round(w * 0.5 * u(key, "x")), round(h * 0.85 * u(key, "y"))
        draw.text((x, y), "© stock 2024", fill=(255, 255, 255), font_size=size, stroke_width=1,
                  stroke_fill=(0, 0, 0))
        return im
    raise ValueError(family)


FAMILIES = ["resize_recompress", "webp", "crop5", "crop10", "crop10_offcentre", "flip", "brightness_contrast",
            "overlay_text"]


def as_written(im: Image.Image, mode: str) -> Image.Image:
    """The pixels the shard holds: the pipeline's resize and encode, decoded back."""
    buf = io.BytesIO()
    im.save(buf, "PNG")
    out = process_image(buf.getvalue(), ImageOptions(resize_mode=mode))
    return Image.open(io.BytesIO(out.data)).convert("RGB")


class Query:
    """A written sample's retrieval codes, verification features and pre-filter signature."""

    def __init__(self, im: Image.Image):
        self.codes = sample_hashes(im)
        self.features = verify.sample_features(im)
        self.signature = verify.sample_signature(self.features)


def candidates(q: Query, codes, items, n_items, max_radius) -> dict[int, int]:
    """item -> min Hamming distance, for items within max_radius."""
    best = np.full(n_items, 65, dtype=np.int64)
    for code in q.codes:
        np.minimum.at(best, items, np.bitwise_count(codes ^ np.uint64(code)).astype(np.int64))
    hit = np.flatnonzero(best <= max_radius)
    return {int(i): int(best[i]) for i in hit}


def indexed_candidates(q: Query, index: HammingIndex, items, max_radius) -> dict[int, int]:
    """candidates() through the multi-index (the index holds `codes`): the same dict, in the same (item) order,
    without scanning every code (at 100k eval items that is ~6M codes per query code)."""
    _, ids, dist = index.query_many(np.array(q.codes, dtype=np.uint64), max_radius)
    hit = items[ids]
    order = np.lexsort((dist, hit))
    hit, dist = hit[order], dist[order]
    first = np.flatnonzero(np.r_[True, hit[1:] != hit[:-1]]) if len(hit) else np.zeros(0, dtype=np.int64)
    return {int(i): int(d) for i, d in zip(hit[first].tolist(), dist[first].tolist())}


def grid(im: Image.Image) -> np.ndarray:
    """16x16 colour grid (uint8) for the self-duplicate test."""
    return np.asarray(im.resize((16, 16), Image.Resampling.BOX), np.uint8)


def index_entry(im: Image.Image) -> tuple:
    """An eval item's (pHash codes of its variants, verification thumbnail, aspect, pre-filter signatures, grid)."""
    thumb, aspect = verify.thumbnail(im), im.width / im.height
    return (np.array([code for _, code in eval_variants(im)], dtype=np.uint64), thumb, aspect,
            verify.signatures(thumb, aspect), grid(im))


def min_grid_rms(eval_grids: np.ndarray, query_grids: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Per query grid, the least RMS (of 255 levels) to an eval item's grid, as is or mirrored. Exact: the
    squared distances are integers and float64 sums of integers below 2**53 are exact in any order."""
    q = query_grids.reshape(len(query_grids), -1).astype(np.float64)
    qq = (q * q).sum(axis=1)
    best = np.full(len(q), np.inf)
    for start in range(0, len(eval_grids), chunk):
        g = eval_grids[start:start + chunk]
        e = np.concatenate([g, g[:, :, ::-1]]).reshape(2 * len(g), -1).astype(np.float64)
        d2 = (e * e).sum(axis=1)[:, None] + qq[None, :] - 2.0 * (e @ q.T)
        best = np.minimum(best, d2.min(axis=0))
    return np.sqrt(np.maximum(best, 0.0) / q.shape[1])


_FORKED = {}  # what forked workers inherit: the function (a closure) and everything it reads


def _forked_call(arg):
    return _FORKED["fn"](arg)


def forked_map(fn, args, workers: int, chunksize: int = 32, label: str = "") -> list:
    """[fn(a) for a in args], in that order, in `workers` forked processes when more than 1: results do not
    depend on the number of workers (each item's work is a pure function of its item). Progress to stderr."""
    args, out, t0 = list(args), [], time.time()
    step = max(1, len(args) // 10)
    _FORKED["fn"] = fn
    try:
        with multiprocessing.get_context("fork").Pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
            for result in pool.imap(_forked_call, args, chunksize) if pool else map(_forked_call, args):
                out.append(result)
                if label and len(out) % step == 0:
                    print(f"  {label}: {len(out)}/{len(args)}, {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    finally:
        _FORKED.clear()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default="bench/work/photos")
    ap.add_argument("--eval-items", type=int, default=10000)
    ap.add_argument("--recall-items", type=int, default=40, help="eval items per kind queried per family")
    ap.add_argument("--background", type=int, default=400, help="unrelated images per kind")
    ap.add_argument("--max-radius", type=int, default=16)
    ap.add_argument("--out", default="bench/work/dedup_quality.npy", help="raw scores, for --recut")
    ap.add_argument("--recut", help="print the tables of a saved run (at COLS) instead of running")
    ap.add_argument("--generated", type=int, default=0,
                    help="generated flat graphics appended to the eval set after the real items (so smaller eval "
                         "sets stay as they are), and as many generated shapes (other seeds) as background")
    ap.add_argument("--workers", type=int, default=2, help="processes hashing eval items and running background "
                                                           "queries (results do not depend on it)")
    ap.add_argument("--check-retrieval", type=int, default=0,
                    help="compare the multi-index lookup with brute force on this many background queries")
    args = ap.parse_args(argv)
    if args.recut:
        recut(args.recut, COLS)
        return 0
    t0 = time.time()

    root = args.photos
    kinds = {
        "photo": load_files(sorted(glob.glob(f"{root}/x/usr/share/backgrounds/**/*.jpg", recursive=True)
                                   + glob.glob(f"{root}/x/usr/share/backgrounds/**/*.png", recursive=True))),
        "icon": load_files(sorted(glob.glob(f"{root}/icons/*.png"))
                           + sorted(glob.glob("/usr/share/icons/Adwaita/96x96/**/*.png", recursive=True))),
        "icon_template": [],
        "text": text_images(1500),
        "chart": charts(1500),
    }
    # Template families: the themes draw one folder (or document page) in many colours with a small emblem
    # (folder-palebrown-download, folder-brown-unlocked, ...); at 32 px they differ by a few pixels. Kept, but
    # counted apart: as negatives they are near-copies of each other, not unrelated images.
    kinds["icon_template"] = [(n, im) for n, im in kinds["icon"] if TEMPLATE_FAMILY.search(n)]
    kinds["icon"] = [(n, im) for n, im in kinds["icon"] if not TEMPLATE_FAMILY.search(n)]
    kinds["emoji"], kinds["flag"] = emoji(f"{root}/x/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
    print({k: len(v) for k, v in kinds.items()}, f"{time.time() - t0:.0f}s", file=sys.stderr)

    # Split: a share of every kind is unrelated background, the rest eval; photos are few, so they are all
    # eval and their unrelated images are crops of 20-45% of another photo's side.
    evals, background = [], defaultdict(list)
    for kind, items in kinds.items():
        for name, im in items:
            if kind != "photo" and u(name, "bg") < min(0.5, args.background / max(1, len(items))):
                background[kind].append(im)
            else:
                evals.append((kind, name, im))
    for k, (name, im) in enumerate(kinds["photo"][: len(kinds["photo"]) // 2]):
        w, h = im.size
        for i in range(10):
            side = round(min(w, h) * (0.2 + 0.25 * u(name, i, "side")))
            left, top = round((w - side) * u(name, i, "x")), round((h - side) * u(name, i, "y"))
            background["photo_patch"].append(im.crop((left, top, left + side, top + side)))
    held_out = {n for n, _ in kinds["photo"][: len(kinds["photo"]) // 2]}
    # Stable order, photos first (they are few), so the first 1k items are a mix like the 10k.
    evals.sort(key=lambda e: (e[0] != "photo", u(e[1], "order")))
    # Generated items come after all real ones, so the first 1k and 10k items are what they were without them.
    evals += [(*generated(i), None) for i in range(args.generated)]
    if args.generated:
        background["gen_shapes"] = [gen_shapes(f"gen_background {i}") for i in range(args.background)]
    evals = evals[: args.eval_items]
    n = len(evals)
    print(f"eval items {n}; background " + str({k: len(v) for k, v in background.items()}), file=sys.stderr)

    entries = forked_map(lambda i: index_entry(eval_image(evals[i])), range(n), args.workers, 64, "eval items hashed")
    codes = np.concatenate([e[0] for e in entries])
    counts = np.array([len(e[0]) for e in entries])
    items = np.repeat(np.arange(n), counts)
    code_start = np.r_[0, np.cumsum(counts)]  # item i's codes: codes[code_start[i]:code_start[i + 1]]
    thumbs, aspects = [e[1] for e in entries], [e[2] for e in entries]
    signatures, aspects_arr = np.stack([e[3] for e in entries]), np.array(aspects)
    eval_grids = np.stack([e[4] for e in entries])
    del entries
    index = HammingIndex(codes, radius=args.max_radius)

    def prefiltered(q: Query, cands: dict[int, int]) -> dict[int, tuple[float, int, int]]:
        """item -> (pre-filter score, rank, reading): rank = how many candidates within RANK_RADIUS score
        higher; reading = the sample's reading the alignment tries (as EvalIndex does)."""
        ids = np.array(sorted(cands), dtype=np.int64)
        if not len(ids):
            return {}
        scores, readings = verify.prefilter(q.signature, signatures[ids], aspects_arr[ids])
        near = np.sort(scores[np.array([cands[i] <= RANK_RADIUS for i in ids.tolist()])])
        ranks = len(near) - np.searchsorted(near, scores, side="right")
        return {i: (float(sc), int(r), int(g))
                for i, sc, r, g in zip(ids.tolist(), scores.tolist(), ranks.tolist(), readings.tolist())}
    print(f"index: {len(codes)} codes, {time.time() - t0:.0f}s", file=sys.stderr)

    align_time, decide_time = [], []

    def scored(q: Query, cands: dict[int, int], align_time=align_time, decide_time=decide_time) -> list[tuple]:
        out = []
        ranked = prefiltered(q, cands)
        for item, d in cands.items():
            if ranked[item][0] < PREFILTER_GATE:
                continue
            features = [q.features[ranked[item][2]]]
            t = time.perf_counter()
            colour, *found = verify.align(features, thumbs[item], aspects[item])
            align_time.append(time.perf_counter() - t)
            shares = (-1.0, -1.0, -1.0)
            if colour >= COLOUR_GATE:
                t = time.perf_counter()
                pair = verify.refine(features, thumbs[item], *found)
                pixels, edges = verify.agreement(*pair)
                decide_time.append(time.perf_counter() - t)
                shares = (verify.agreement(*pair, TIGHT_TOLERANCE)[0], pixels, edges)
            out.append((item, d, colour, *shares, *ranked[item][:2]))
        return out

    # Recall: per family, eval items of each kind transformed, written, looked up.
    true_pairs = defaultdict(list)  # (family, mode) -> [(d, score)]
    by_kind = defaultdict(list)
    for i, (kind, name, _) in enumerate(evals):
        if kind != "photo" or name not in held_out:
            by_kind[kind].append(i)
    for kind, idx in by_kind.items():
        for i in idx[: args.recall_items]:
            for family in FAMILIES:
                for mode in ("center_crop", "border"):
                    im = as_written(transform(eval_image(evals[i]), family, f"{evals[i][1]}/{family}"), mode)
                    q = Query(im)
                    own = codes[code_start[i]:code_start[i + 1]]
                    d = candidates(q, own, np.full(len(own), i), n, 64).get(i, 65)
                    near = indexed_candidates(q, index, items, RANK_RADIUS)
                    near[i] = d
                    *ranked, reading = prefiltered(q, near)[i]
                    features = [q.features[reading]]
                    colour, *found = verify.align(features, thumbs[i], aspects[i])
                    pair = verify.refine(features, thumbs[i], *found)
                    true_pairs[(family, mode, kind)].append(
                        (d, colour, verify.agreement(*pair, TIGHT_TOLERANCE)[0], *verify.agreement(*pair), *ranked))
    print(f"recall queries done, {time.time() - t0:.0f}s", file=sys.stderr)

    # False positives: every unrelated image against the whole eval set (photo patches only against
    # photos they were not cut from).
    queries = [(kind, im) for kind, ims in background.items() for im in ims]
    # (A photo patch is a crop of a photo it is never compared with; a flat patch is near no eval item.)
    pool_queries = [k for k, (kind, _) in enumerate(queries) if kind != "photo_patch"]
    rms = min_grid_rms(eval_grids, np.stack([grid(queries[k][1]) for k in pool_queries]))
    is_dup = np.zeros(len(queries), dtype=bool)
    is_dup[pool_queries] = rms <= SELF_DUPLICATE_RMS
    if args.check_retrieval:
        # The multi-index must hand every query exactly brute force's candidates (item and distance).
        sample = sorted({round(k * (len(queries) - 1) / max(1, args.check_retrieval - 1))
                         for k in range(args.check_retrieval)})
        for k in sample:
            q = Query(as_written(queries[k][1], "center_crop"))
            for radius in (RANK_RADIUS, args.max_radius):
                slow, fast = candidates(q, codes, items, n, radius), indexed_candidates(q, index, items, radius)
                if list(slow.items()) != list(fast.items()):
                    raise SystemExit(f"retrieval check failed: query {k} ({queries[k][0]}) at radius {radius}")
        print(f"retrieval check: {len(sample)} background queries, multi-index == brute force at radius "
              f"{RANK_RADIUS} and {args.max_radius}, {time.time() - t0:.0f}s", file=sys.stderr)

    def background_query(k: int) -> tuple:
        kind, im = queries[k]
        q = Query(as_written(im, "center_crop"))
        cands = indexed_candidates(q, index, items, args.max_radius)
        if kind == "photo_patch":
            cands = {i: d for i, d in cands.items() if evals[i][1] not in held_out}
        aligned, decided = [], []
        return scored(q, cands, aligned, decided), aligned, decided

    fp = defaultdict(list)  # kind -> per query list of (item, d, score, structure)
    self_dups = defaultdict(list)  # kind -> per query: is it a near-pixel copy of an eval item
    for k, (out, aligned, decided) in enumerate(forked_map(background_query, range(len(queries)), args.workers, 4,
                                                          "background queries")):
        fp[queries[k][0]].append(out)
        self_dups[queries[k][0]].append(bool(is_dup[k]))
        align_time += aligned
        decide_time += decided
    print(f"background queries done, {time.time() - t0:.0f}s; alignment "
          f"{1e3 * np.median(align_time):.2f} ms median per candidate (mean {1e3 * np.mean(align_time):.2f}); "
          f"decision {1e3 * np.median(decide_time):.2f} ms median (mean {1e3 * np.mean(decide_time):.2f}) on "
          f"{len(decide_time)} of {len(align_time)} candidates; self-duplicates "
          f"{ {k: sum(v) for k, v in self_dups.items()} }", file=sys.stderr)
    np.save(args.out, {"true": dict(true_pairs), "fp": dict(fp), "self_dups": dict(self_dups),
                                             "kinds": [e[0] for e in evals], "names": [e[1] for e in evals]},
            allow_pickle=True)  # for re-cutting thresholds without re-running
    report(true_pairs, fp, self_dups, n)
    hits_by_eval_kind(fp, self_dups, [e[0] for e in evals])
    return 0


# Columns: (pHash radius r, colour >= c, pixels >= p, edges >= e, pixels at TIGHT_TOLERANCE instead of 32,
# pre-filter score >= f, at most k items verified per sample). Every column asks for f >= PREFILTER_GATE.
COLS = [(12, None, None, None, False, PREFILTER_GATE, None), (12, 0.9, 0.9, 0.8, False, PREFILTER_GATE, None),
        (12, 0.9, 0.9, 0.8, False, 0.7, None), (12, 0.9, 0.9, 0.8, False, 0.8, None),
        (12, 0.9, 0.9, 0.8, False, 0.8, 16), (12, 0.9, 0.9, 0.8, False, 0.8, 8),
        (12, 0.9, 0.9, 0.8, False, 0.85, 16), (12, 0.9, 0.9, 0.85, False, 0.8, 16),
        (12, 0.9, 0.9, 0.9, False, 0.8, 16), (14, 0.9, 0.9, 0.8, False, 0.8, 16), (16, 0.9, 0.9, 0.8, False, 0.8, 16),
        (16, 0.85, 0.9, 0.8, False, 0.8, 16)]


def _label(r, tc, tp, te, tight, tf, cap) -> str:
    return (f"r{r}" + ("" if tc is None else f" c{tc}") + ("" if tp is None else f" p{tp}" + ("t" if tight else ""))
            + ("" if te is None else f" e{te}") + f" f{tf}" + ("" if cap is None else f" k{cap}"))


def _ok(d, colour, pixels_tight, pixels, edges, prefilter, rank, r, tc, tp, te, tight, tf, cap) -> bool:
    return (d <= r and prefilter >= tf and (cap is None or rank < cap) and (tc is None or colour >= tc)
            and (tp is None or (pixels_tight if tight else pixels) >= tp) and (te is None or edges >= te))


def _within(query: list[tuple], size: int) -> list[tuple]:
    """A background query's scored pairs against the first `size` eval items, each ranked among those alone."""
    pairs = [pair for i, *pair in query if i < size]
    near = np.sort([pair[-2] for pair in pairs if pair[0] <= RANK_RADIUS])
    return [(*pair[:-1], len(near) - int(np.searchsorted(near, pair[-2], side="right"))) for pair in pairs]


def report(true_pairs, fp, self_dups, n: int, cols=COLS):
    """Recall and false positives at retrieval radius r and the verification thresholds of each column."""
    head = " | ".join(_label(*c) for c in cols)
    print("\n### Recall by family (all kinds pooled)")
    print(f"| family | {head} |\n" + "|---" * (len(cols) + 1) + "|")
    fams = sorted({f for f, _, _ in true_pairs}, key=FAMILIES.index)
    for fam in fams:
        pairs = [p for (f, _, _), v in true_pairs.items() if f == fam for p in v]
        print(f"| {fam} | " + " | ".join(f"{np.mean([_ok(*p, *c) for p in pairs]):.3f}" for c in cols) + " |")
    print("\n### Recall by kind of eval image (all families)")
    for kind in sorted({k for _, _, k in true_pairs}):
        pairs = [p for (_, _, k), v in true_pairs.items() if k == kind for p in v]
        print(f"| {kind} | " + " | ".join(f"{np.mean([_ok(*p, *c) for p in pairs]):.3f}" for c in cols) + " |")
    for size in sorted({min(1000, n), min(10000, n), n}):
        print(f"\n### False-positive rate per unrelated image, eval set of {size} items "
              "(self-duplicates of the pool left out; last row: with them)")
        print(f"| background | queries | {head} |\n" + "|---" * (len(cols) + 2) + "|")
        total, with_dups, plain = defaultdict(list), defaultdict(list), defaultdict(list)
        for kind, queries in fp.items():
            row = []
            for c in cols:
                hits = [any(_ok(*pair, *c) for pair in _within(q, size)) for q in queries]
                distinct = [h for h, dup in zip(hits, self_dups[kind]) if not dup]
                row.append(np.mean(distinct))
                total[c] += distinct
                with_dups[c] += hits
                if kind != "icon_template":
                    plain[c] += distinct
            print(f"| {kind} | {len(distinct)} | " + " | ".join(f"{x:.4f}" for x in row) + " |")
        print(f"| all distinct | {len(total[cols[0]])} | " + " | ".join(f"{np.mean(total[c]):.4f}" for c in cols)
              + " |")
        print(f"| **all distinct, template families apart** | {len(plain[cols[0]])} | "
              + " | ".join(f"{np.mean(plain[c]):.4f}" for c in cols) + " |")
        print(f"| all, with self-duplicates | {len(with_dups[cols[0]])} | "
              + " | ".join(f"{np.mean(with_dups[c]):.4f}" for c in cols) + " |")


DEFAULT_COL = (12, 0.9, 0.9, 0.8, False, 0.8, 16)


def hits_by_eval_kind(fp, self_dups, eval_kinds: list[str], size: int | None = None, col=DEFAULT_COL) -> None:
    """Which false positives dominate: per background kind, the distinct queries with an accepted hit among the
    first `size` eval items, by the eval kind of what they hit (a query hitting two kinds counts in both)."""
    size = len(eval_kinds) if size is None else size
    table, totals = defaultdict(lambda: defaultdict(int)), {}
    for kind, queries in fp.items():
        distinct = [q for q, dup in zip(queries, self_dups[kind]) if not dup]
        totals[kind] = len(distinct)
        for q in distinct:
            ids = [i for i, *pair in q if i < size]
            for hit in {eval_kinds[i] for i, pair in zip(ids, _within(q, size)) if _ok(*pair, *col)}:
                table[kind][hit] += 1
    columns = sorted({k for row in table.values() for k in row})
    print(f"\n### Queries with a false positive at {_label(*col)}, eval set of {size} items, by kind of the eval "
          "item hit (self-duplicates left out)")
    print("| background | queries | " + " | ".join(columns) + " |\n" + "|---" * (len(columns) + 2) + "|")
    for kind in fp:
        print(f"| {kind} | {totals[kind]} | " + " | ".join(str(table[kind][c]) for c in columns) + " |")


def recut(path: str, cols) -> None:
    """The tables again from a saved run, at other thresholds."""
    saved = np.load(path, allow_pickle=True).item()
    report(saved["true"], saved["fp"], saved["self_dups"], len(saved["kinds"]), cols)
    hits_by_eval_kind(saved["fp"], saved["self_dups"], saved["kinds"])


if __name__ == "__main__":
    sys.exit(main())
