"""The experiment web: a deterministic offline web whose pictures show what their captions say, and held-out
eval sets some of whose images leak onto it.

The demo web (openwit/demo_web.py) tests the pipeline; its subject is the same blob under every caption, so
nothing can be learned from it. Here every picture draws one to three shapes of one colour on a muted,
textured background, and its alt text says which ("two red stars on paper"), so a tiny CLIP trained on a few
hundred pairs learns colours and shapes, and zero-shot accuracy on the eval sets can be read against chance.

Eval sets (ImageFolder layout, class folders named by the class, PNG like a CIFAR export), drawn from a
separate random stream so they are held out:
- `colours`: one shape of each colour class (8 classes, chance 12.5%);
- `shapes`: one shape of each shape class in a random colour (6 classes, chance 16.7%).

A fraction of the eval images leak onto the web under the transformations that real copies go through
(downscale, JPEG recompression, a crop, a mirror flip), captioned with what they show, so the build's
decontamination finds them (`--decontaminate report` keeps them and records overlap/) and the overlap report
can ask whether the leak inflated the score, as the CLIP paper's section 5 does.
"""

import io
import math
import os
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from openwit.demo_web import DemoSite, encode

COLOURS = {
    "red": (205, 35, 35), "green": (40, 160, 55), "blue": (35, 70, 205), "yellow": (235, 215, 30),
    "orange": (240, 135, 20), "purple": (130, 40, 170), "black": (20, 20, 20), "white": (245, 245, 245),
}
SHAPES = ["circle", "square", "triangle", "star", "cross", "diamond"]
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
CAPTIONS = [
    "a photo of {n} {colour} {shapes}", "{N} {colour} {shapes} on paper", "{Colour} {shapes}, hand drawn",
    "my drawing of {n} {colour} {shapes}", "{n} {shapes} in {colour}", "clip art of {n} {colour} {shapes}",
    "{N} {colour} {shapes} on a grey background", "sticker: {colour} {shapes}",
]
SIZES = [(96, 96), (128, 96), (96, 128), (112, 112), (160, 120), (120, 160)]
LEAK_TRANSFORMS = ("downscale", "recompress", "crop", "mirror")


@dataclass
class EvalImage:
    eval_set: str  # "colours" or "shapes"
    label: str  # class name = folder name
    colour: str
    shape: str
    png: bytes
    name: str  # file name inside the class folder

    @property
    def eval_id(self) -> str:  # the id dedup/eval_sets.py gives an image of an ImageFolder set
        return f"{self.label}/{self.name}"


@dataclass
class ExperimentWeb:
    site: DemoSite
    eval_images: list[EvalImage] = field(default_factory=list)
    probe_images: list[EvalImage] = field(default_factory=list)  # labelled training split for linear probes
    leaked: dict[str, str] = field(default_factory=dict)  # "eval_set/eval_id" -> transformation
    copy_of: dict[str, str] = field(default_factory=dict)  # web path of a leaked copy -> "eval_set/eval_id"


def _jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int) -> tuple[int, ...]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)


def _shape_points(shape: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        corners = [turn + k * 2 * math.pi / 3 - math.pi / 2 for k in range(3)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if shape == "star":
        return [(cx + (r if k % 2 == 0 else r * 0.42) * math.cos(turn + k * math.pi / 5 - math.pi / 2),
                 cy + (r if k % 2 == 0 else r * 0.42) * math.sin(turn + k * math.pi / 5 - math.pi / 2))
                for k in range(10)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    raise ValueError(shape)


def draw_picture(rng: random.Random, size: tuple[int, int], colour: str, shape: str, count: int) -> Image.Image:
    """`count` shapes of one colour, inside the central square (so a centre crop keeps them), on a muted
    gradient with faint clutter and grain, so every picture is distinct for the perceptual hashes."""
    w, h = size
    base = rng.randint(95, 175)
    top, bottom = _jitter(rng, (base + 30,) * 3, 15), _jitter(rng, (base - 30,) * 3, 15)
    ramp = Image.linear_gradient("L").rotate(rng.uniform(0, 360), resample=Image.BILINEAR, expand=False)
    img = Image.composite(Image.new("RGB", (w, h), bottom), Image.new("RGB", (w, h), top), ramp.resize((w, h)))
    # Large grey blobs give each background its own low-frequency layout: without them the perceptual
    # hashes (which see only the coarse layout) would call pictures of one shape and place near-duplicates.
    blobs = Image.new("RGB", (w, h))
    blob_draw = ImageDraw.Draw(blobs)
    blob_draw.rectangle([0, 0, w, h], fill=(base,) * 3)
    for _ in range(rng.randint(6, 10)):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.1, 0.35) * min(w, h)
        blob_draw.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(rng, (rng.randint(40, 220),) * 3, 10))
    img = Image.blend(img, blobs.filter(ImageFilter.GaussianBlur(radius=min(w, h) / 16)), 0.8)
    draw = ImageDraw.Draw(img)
    side = min(w, h)
    x0, y0 = (w - side) / 2, (h - side) / 2
    cells = rng.sample([(i, j) for i in range(2) for j in range(2)], count) if count > 1 else [None]
    for cell in cells:
        if cell is None:
            r = side * rng.uniform(0.22, 0.34)
            cx, cy = x0 + side / 2 + rng.uniform(-0.1, 0.1) * side, y0 + side / 2 + rng.uniform(-0.1, 0.1) * side
        else:
            r = side * rng.uniform(0.12, 0.17)
            cx = x0 + side * (0.28 + 0.44 * cell[0]) + rng.uniform(-0.04, 0.04) * side
            cy = y0 + side * (0.28 + 0.44 * cell[1]) + rng.uniform(-0.04, 0.04) * side
        fill = _jitter(rng, COLOURS[colour], 22)
        if shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif shape == "square":
            draw.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=fill)
        elif shape == "cross":
            t = r * 0.32
            draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
            draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
        else:
            draw.polygon(_shape_points(shape, cx, cy, r, rng.uniform(-0.15, 0.15)), fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
    grain = np.random.default_rng(rng.randrange(2**32)).normal(0, 4, (h, w, 1))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8))


def caption(rng: random.Random, colour: str, shape: str, count: int) -> str:
    n = COUNT_WORDS[count]
    shapes = shape + ("es" if shape == "cross" else "s") if count > 1 else shape
    return rng.choice(CAPTIONS).format(n=n, N=n.capitalize(), colour=colour, Colour=colour.capitalize(),
                                       shapes=shapes)


def leak(rng: random.Random, png: bytes, how: str) -> bytes:
    """The eval image as a copy on the web would be: smaller, recompressed, cropped or mirrored (all JPEG)."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    w, h = img.size
    if how == "downscale":
        img = img.resize((int(w * 0.7), int(h * 0.7)), Image.BICUBIC)
    elif how == "crop":
        dx, dy = int(w * 0.05), int(h * 0.05)
        img = img.crop((dx, dy, w - dx, h - dy))  # the central 90%
    elif how == "mirror":
        img = ImageOps.mirror(img)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=60 if how == "recompress" else 85)
    return out.getvalue()


def queries() -> list[str]:
    plurals = [s + ("es" if s == "cross" else "s") for s in SHAPES]
    return sorted({*COLOURS, *SHAPES, *plurals, "two", "three", "hand drawn", "clip art",
                   *(f"{c} {s}" for c in COLOURS for s in SHAPES)})


def labelled_images(rng: random.Random, per_class: int) -> list[EvalImage]:
    """`per_class` single-shape pictures of each colour (set "colours") and of each shape (set "shapes")."""
    images = []
    for eval_set, classes in (("colours", list(COLOURS)), ("shapes", SHAPES)):
        for label in classes:
            for k in range(per_class):
                colour = label if eval_set == "colours" else rng.choice(list(COLOURS))
                shape = label if eval_set == "shapes" else rng.choice(SHAPES)
                out = io.BytesIO()
                draw_picture(rng, rng.choice(SIZES), colour, shape, 1).save(out, "PNG")
                images.append(EvalImage(eval_set, label, colour, shape, out.getvalue(), f"{k:04d}.png"))
    return images


def generate(seed: int = 0, pictures: int = 600, eval_per_class: int = 10, leak_fraction: float = 0.1,
             probe_per_class: int = 0, images_per_page: int = 20) -> ExperimentWeb:
    """The web (pictures + leaked eval copies on HTML pages), the eval sets and the probes' training split,
    each from its own stream of `seed`, so they are disjoint draws and one does not shift another."""
    web_rng = random.Random(f"web/{seed}")
    web = ExperimentWeb(DemoSite(queries=queries()))
    web.eval_images = labelled_images(random.Random(f"eval/{seed}"), eval_per_class)
    web.probe_images = labelled_images(random.Random(f"probe/{seed}"), probe_per_class)

    entries = []  # (path, body, content type, alt)
    for i in range(pictures):
        colour, shape = web_rng.choice(list(COLOURS)), web_rng.choice(SHAPES)
        count = web_rng.choice([1, 1, 2, 3])
        body, ctype = encode(draw_picture(web_rng, web_rng.choice(SIZES), colour, shape, count),
                             web_rng.choice(["jpg", "jpg", "png", "webp"]))
        entries.append((f"/img/{i:05d}.{'jpg' if ctype == 'image/jpeg' else ctype.split('/')[1]}", body, ctype,
                        caption(web_rng, colour, shape, count)))
    leak_count = round(leak_fraction * len(web.eval_images))
    for n, item in enumerate(sorted(web_rng.sample(web.eval_images, leak_count),
                                    key=lambda e: (e.eval_set, e.eval_id))):
        how = LEAK_TRANSFORMS[n % len(LEAK_TRANSFORMS)]
        web.leaked[f"{item.eval_set}/{item.eval_id}"] = how
        web.copy_of[f"/copies/{n:05d}.jpg"] = f"{item.eval_set}/{item.eval_id}"
        entries.append((f"/copies/{n:05d}.jpg", leak(web_rng, item.png, how), "image/jpeg",
                        caption(web_rng, item.colour, item.shape, 1)))
    web_rng.shuffle(entries)  # leaked copies sit among the other pictures, as on the web

    for p in range(0, len(entries), images_per_page):
        page_path = f"/gallery/page{p // images_per_page:04d}.html"
        figures = []
        for path, body, ctype, alt in entries[p:p + images_per_page]:
            web.site.files[path] = (body, ctype, {})
            web.site.pairs.append((path, alt, page_path))
            web.site.expected[path] = "success"
            figures.append(f"<figure><img src='{path}' alt='{alt}'></figure>")
        web.site.files[page_path] = (f"<!doctype html><html><body>{''.join(figures)}</body></html>".encode(),
                                     "text/html", {})
    web.site.files["/robots.txt"] = (b"User-agent: *\nAllow: /\n", "text/plain", {})
    return web


def write_image_folders(images: list[EvalImage], folder: str) -> dict[str, str]:
    """Each set of `images` (web.eval_images, web.probe_images) as an ImageFolder under `folder`;
    returns {name: path} for --eval-set NAME=PATH."""
    paths = {}
    for item in images:
        paths[item.eval_set] = os.path.join(folder, item.eval_set)
        os.makedirs(os.path.join(paths[item.eval_set], item.label), exist_ok=True)
        with open(os.path.join(paths[item.eval_set], item.label, item.name), "wb") as f:
            f.write(item.png)
    return paths
