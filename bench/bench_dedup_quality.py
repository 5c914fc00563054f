"""Near-duplicate detection quality with hard negatives: recall per transformation family and false-positive
rate per kind of unrelated image, for retrieval alone (pHash radius) and for retrieval + verification.

Images come from packages only (bench/fetch_dedup_photos.sh, then bench/render_icons.sh):
- photos: Debian's mate-backgrounds and ukui-wallpapers;
- icons: papirus-icon-theme and breeze-icon-theme rendered to 128 px on white, and Adwaita's PNGs;
- emoji and flags: the Noto colour emoji font (flags are its regional-indicator pairs);
- text and charts: text on a plain colour and bar charts, drawn here.
Each kind is split by a stable hash: most of it forms the eval set, the rest is the unrelated background.
Eval sets of 1k and 10k items are nested (the 1k set is a part of the 10k one).

Every query goes through the pipeline's own resize and encode (pipeline/resize.py: 256 px, center crop or
border, JPEG q95) and is decoded back, so what is measured is what the shard holds.

    python bench/bench_dedup_quality.py --photos bench/work/photos --eval-items 10000
"""

import argparse
import glob
import io
import os
import re
import sys
import time
from collections import defaultdict

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dedup import verify  # noqa: E402
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default="bench/work/photos")
    ap.add_argument("--eval-items", type=int, default=10000)
    ap.add_argument("--recall-items", type=int, default=40, help="eval items per kind queried per family")
    ap.add_argument("--background", type=int, default=400, help="unrelated images per kind")
    ap.add_argument("--max-radius", type=int, default=16)
    ap.add_argument("--out", default="bench/work/dedup_quality.npy", help="raw scores, for --recut")
    ap.add_argument("--recut", help="print the tables of a saved run (at COLS) instead of running")
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
    evals = evals[: args.eval_items]
    n = len(evals)
    print(f"eval items {n}; background " + str({k: len(v) for k, v in background.items()}), file=sys.stderr)

    codes, items, thumbs, aspects, signatures = [], [], [], [], []
    for i, (_, _, im) in enumerate(evals):
        for _, code in eval_variants(im):
            codes.append(code)
            items.append(i)
        thumbs.append(verify.thumbnail(im))
        aspects.append(im.width / im.height)
        signatures.append(verify.signatures(thumbs[-1], aspects[-1]))
    codes, items = np.array(codes, dtype=np.uint64), np.array(items)
    signatures, aspects_arr = np.stack(signatures), np.array(aspects)

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

    def scored(q: Query, cands: dict[int, int]) -> list[tuple]:
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
                    im = as_written(transform(evals[i][2], family, f"{evals[i][1]}/{family}"), mode)
                    q = Query(im)
                    d = candidates(q, codes[items == i], items[items == i], n, 64).get(i, 65)
                    near = candidates(q, codes, items, n, RANK_RADIUS)
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
    def grid(im):
        return np.asarray(im.resize((16, 16), Image.Resampling.BOX), np.float32)

    eval_grids = np.stack([grid(im) for _, _, im in evals])
    eval_flat = np.concatenate([eval_grids, eval_grids[:, :, ::-1]]).reshape(2 * n, -1)
    fp = defaultdict(list)  # kind -> per query list of (item, d, score, structure)
    self_dups = defaultdict(list)  # kind -> per query: is it a near-pixel copy of an eval item
    for kind, ims in background.items():
        for im in ims:
            rms = np.sqrt(((eval_flat - grid(im).reshape(1, -1)) ** 2).mean(axis=1))
            # (A photo patch is a crop of a photo it is never compared with; a flat patch is near no eval item.)
            self_dups[kind].append(kind != "photo_patch" and bool(rms.min() <= SELF_DUPLICATE_RMS))
            q = Query(as_written(im, "center_crop"))
            cands = candidates(q, codes, items, n, args.max_radius)
            if kind == "photo_patch":
                cands = {i: d for i, d in cands.items() if evals[i][1] not in held_out}
            fp[kind].append(scored(q, cands))
    print(f"background queries done, {time.time() - t0:.0f}s; alignment "
          f"{1e3 * np.median(align_time):.2f} ms median per candidate (mean {1e3 * np.mean(align_time):.2f}); "
          f"decision {1e3 * np.median(decide_time):.2f} ms median (mean {1e3 * np.mean(decide_time):.2f}) on "
          f"{len(decide_time)} of {len(align_time)} candidates; self-duplicates "
          f"{ {k: sum(v) for k, v in self_dups.items()} }", file=sys.stderr)
    np.save(args.out, {"true": dict(true_pairs), "fp": dict(fp), "self_dups": dict(self_dups),
                                             "kinds": [e[0] for e in evals], "names": [e[1] for e in evals]},
            allow_pickle=True)  # for re-cutting thresholds without re-running
    report(true_pairs, fp, self_dups, n)
    return 0


# Columns: (pHash radius r, colour >= c, pixels >= p, edges >= e, pixels at TIGHT_TOLERANCE instead of 32,
# pre-filter score >= f, at most k items verified per sample). Every column asks for f >= PREFILTER_GATE.
COLS = [(12, None, None, None, False, PREFILTER_GATE, None), (12, 0.9, 0.9, 0.8, False, PREFILTER_GATE, None),
        (12, 0.9, 0.9, 0.8, False, 0.7, None), (12, 0.9, 0.9, 0.8, False, 0.8, None),
        (12, 0.9, 0.9, 0.8, False, 0.8, 16), (12, 0.9, 0.9, 0.8, False, 0.8, 8),
        (12, 0.9, 0.9, 0.8, False, 0.85, 16), (12, 0.9, 0.9, 0.85, False, 0.8, 16),
        (12, 0.9, 0.9, 0.9, False, 0.8, 16), (14, 0.9, 0.9, 0.8, False, 0.8, 16), (16, 0.85, 0.9, 0.8, False, 0.8, 16)]


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
    for size in sorted({min(1000, n), n}):
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


def recut(path: str, cols) -> None:
    """The tables again from a saved run, at other thresholds."""
    saved = np.load(path, allow_pickle=True).item()
    report(saved["true"], saved["fp"], saved["self_dups"], len(saved["kinds"]), cols)


if __name__ == "__main__":
    sys.exit(main())
