"""The demo web: a small, deterministic website to build a dataset from, offline.

It is the embedded default of the main job (`openwit demo`) and the web the tests crawl. It looks like the web
the pipeline meets: HTML pages with `<img src alt>` whose alt text reads like real alt text (and sometimes is
junk: a camera file name, "image", empty), JPEG/PNG/WebP images of varied sizes and aspect ratios drawn with
real structure (gradients, shapes, texture, so resizing and perceptual hashes behave as on photos), some broken
links, an image URL that serves HTML, a truncated JPEG, an opt-out header, and a robots.txt that disallows a
folder. Everything derives from the seed, so two sites generated with one seed are byte-identical.
"""

import argparse
import asyncio
import io
import math
import os
import random
import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS = {
    "red": (200, 40, 40), "blue": (40, 70, 190), "green": (50, 150, 60), "yellow": (230, 200, 40),
    "orange": (235, 130, 30), "purple": (120, 50, 150), "white": (240, 240, 235), "black": (25, 25, 30),
    "brown": (120, 80, 40), "grey": (128, 128, 128),
}
SUBJECTS = ["cat", "dog", "bicycle", "car", "house", "tree", "boat", "chair", "mountain", "flower", "bird",
            "guitar", "lighthouse", "teapot", "horse", "bridge", "tent", "kite", "train", "apple"]
PLACES = ["on a beach", "in a garden", "near a lake", "on a city street", "in the snow", "at sunset",
          "in a forest", "on a wooden table", "under a blue sky", "in a living room", "by the sea",
          "on a mountain road"]
TEMPLATES = [
    "A {colour} {subject} {place}", "{Colour} {subject} {place}, photographed in the morning",
    "Close-up of a {colour} {subject}", "My old {colour} {subject} {place}",
    "The {colour} {subject} we saw {place}", "A small {subject} {place}",
    "Vintage {colour} {subject} for sale", "Two {subject}s {place}",
]
JUNK_ALTS = ["IMG_2034.JPG", "image", "", "DSC0001", "20160126_135930.jpg", "click here", "logo"]
FORMATS = ["jpg", "jpg", "jpg", "png", "webp"]  # photos on the web are mostly JPEG
SIZES = [(640, 480), (480, 640), (800, 600), (300, 300), (1024, 341), (256, 512), (96, 72), (960, 540),
         (500, 375), (400, 300)]


@dataclass
class DemoSite:
    """Paths to response bodies and headers; `pairs` are (image path, alt text, page path) as on the pages."""
    files: dict[str, tuple[bytes, str, dict]] = field(default_factory=dict)  # path -> (body, type, headers)
    pairs: list[tuple[str, str, str]] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)  # image path -> "success" or the failure reason
    queries: list[str] = field(default_factory=list)


def draw_image(rng: random.Random, size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    """A picture with photo-like structure: a sky/ground gradient, textured shapes and a main subject."""
    w, h = size
    top = tuple(rng.randrange(60, 230) for _ in range(3))
    bottom = tuple(rng.randrange(20, 200) for _ in range(3))
    img = Image.linear_gradient("L").resize((w, h))
    img = Image.composite(Image.new("RGB", (w, h), bottom), Image.new("RGB", (w, h), top), img)
    draw = ImageDraw.Draw(img)
    horizon = int(h * rng.uniform(0.45, 0.75))
    draw.rectangle([0, horizon, w, h], fill=tuple(max(0, c - 40) for c in bottom))
    for _ in range(rng.randrange(6, 16)):  # background clutter
        x, y = rng.randrange(w), rng.randrange(h)
        r = rng.randrange(max(2, min(w, h) // 30), max(3, min(w, h) // 6))
        fill = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        else:
            draw.polygon([(x + r * math.cos(a), y + r * math.sin(a))
                          for a in (rng.uniform(0, 6.28) for _ in range(5))], fill=fill)
    cx, cy, s = w // 2 + rng.randrange(-w // 8, w // 8 + 1), horizon, min(w, h) // 3
    draw.rounded_rectangle([cx - s, cy - s, cx + s, cy + s // 3], radius=max(1, s // 4), fill=colour)
    draw.ellipse([cx - s // 2, cy - s - s // 2, cx + s // 2, cy - s // 2], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(radius=0.8))
    # Sensor-like grain, from the seeded generator (Pillow's effect_noise is not reproducible).
    grain = np.random.default_rng(rng.randrange(2**32)).normal(0, 6, (h, w, 1))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str) -> tuple[bytes, str]:
    out = io.BytesIO()
    if fmt == "jpg":
        img.save(out, "JPEG", quality=88)
        return out.getvalue(), "image/jpeg"
    if fmt == "png":
        img.save(out, "PNG", compress_level=3)
        return out.getvalue(), "image/png"
    img.save(out, "WEBP", quality=85)
    return out.getvalue(), "image/webp"


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1>{title}</h1>{body}</body></html>").encode()


def generate_site(seed: int = 0, pages: int = 12, images_per_page: int = 10) -> DemoSite:
    rng = random.Random(seed)  # demo content only; the pipeline itself never uses `random`
    site = DemoSite()
    index_links = []
    for p in range(pages):
        folder = "private" if p == pages - 1 else "gallery"  # robots.txt disallows /private/
        page_path = f"/{folder}/page{p:03d}.html"
        figures = []
        for i in range(images_per_page):
            colour_name, subject = rng.choice(list(COLOURS)), rng.choice(SUBJECTS)
            fmt = rng.choice(FORMATS)
            path = f"/{folder}/img/{p:03d}_{i:02d}.{fmt}"
            if rng.random() < 0.1:
                alt = rng.choice(JUNK_ALTS)
            else:
                alt = rng.choice(TEMPLATES).format(colour=colour_name, Colour=colour_name.capitalize(),
                                                   subject=subject, place=rng.choice(PLACES))
            img = draw_image(rng, rng.choice(SIZES), COLOURS[colour_name])
            body, ctype = encode(img, fmt)
            headers, expected = {}, "robots_disallowed" if folder == "private" else "success"
            kind = rng.random()
            if kind < 0.05:
                path, expected = path.replace("/img/", "/missing/"), "http_404"  # broken link
            elif kind < 0.08:
                body, ctype = _page("Not an image", "<p>Sorry</p>"), "image/jpeg"  # lies about its type
                expected = "not_an_image"
            elif kind < 0.10 and fmt == "jpg":
                body, expected = body[: len(body) // 3], "decode_error"  # truncated download
            elif kind < 0.12:
                headers["X-Robots-Tag"] = "noai, noimageai"  # the publisher opted out of AI training
                expected = "opted_out"
            if folder == "private":
                expected = "robots_disallowed"  # robots.txt is checked before anything is fetched
            site.expected[path] = expected
            if "/missing/" not in path:
                site.files[path] = (body, ctype, headers)
            site.pairs.append((path, alt, page_path))
            figures.append(f"<figure><img src='{path}' alt='{alt}'><figcaption>{alt}</figcaption></figure>")
        site.files[page_path] = (_page(f"Gallery {p}", "".join(figures)), "text/html", {})
        index_links.append(f"<li><a href='{page_path}'>Gallery {p}</a></li>")
    site.files["/index.html"] = (_page("Demo web", f"<ul>{''.join(index_links)}</ul>"), "text/html", {})
    site.files["/robots.txt"] = (b"User-agent: *\nDisallow: /private/\n", "text/plain", {})
    words = sorted({*COLOURS, *SUBJECTS, *(f"{c} {s}" for c in COLOURS for s in SUBJECTS[:5])})
    site.queries = words + ["sunset", "beach", "garden", "snow", "forest", "blue sky", "city street"]
    return site


def write_inputs(site: DemoSite, base_url: str, folder: str) -> tuple[str, str]:
    """Write the site's url+caption table (Parquet) and query list (text); return their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    pairs_path, queries_path = os.path.join(folder, "pairs.parquet"), os.path.join(folder, "queries.txt")
    pq.write_table(pa.table({
        "url": [base_url + path for path, _, _ in site.pairs],
        "caption": [alt for _, alt, _ in site.pairs],
        "page_url": [base_url + page for _, _, page in site.pairs],
    }), pairs_path)
    with open(queries_path, "w") as f:
        f.write("\n".join(site.queries) + "\n")
    return pairs_path, queries_path


def make_app(site: DemoSite):
    from aiohttp import web

    async def handle(request):
        path = "/index.html" if request.path == "/" else request.path
        if path not in site.files:
            return web.Response(status=404, text="not found")
        body, ctype, headers = site.files[path]
        return web.Response(body=body, content_type=ctype, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


class DemoWebServer:
    """Serves a DemoSite on 127.0.0.1 from a background thread: `with DemoWebServer(site) as base_url:`."""

    def __init__(self, site: DemoSite, host: str = "127.0.0.1", port: int = 0):
        self.site, self.host, self.port = site, host, port
        self._ready = threading.Event()
        self._loop = None

    def __enter__(self) -> str:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self.base_url is None:
            raise RuntimeError(f"demo web could not start on {self.host}:{self.port}: {self._error}")
        return self.base_url

    def __exit__(self, *exc):
        if self._loop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _serve(self):
        from aiohttp import web

        self.base_url, self._error = None, None

        async def main():
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            runner = web.AppRunner(make_app(self.site), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            try:
                await site.start()
            except OSError as e:
                self._error = e
                self._ready.set()
                return
            port = site._server.sockets[0].getsockname()[1]
            self.base_url = f"http://{self.host}:{port}"
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openwit demo-web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--write-inputs", metavar="DIR", help="write pairs.parquet and queries.txt for the site")
    args = parser.parse_args(argv)
    site = generate_site(args.seed)
    with DemoWebServer(site, port=args.port) as base_url:
        if args.write_inputs:
            write_inputs(site, base_url, args.write_inputs)
            print(f"wrote {args.write_inputs}/pairs.parquet and queries.txt")
        print(f"serving the demo web on {base_url} (Ctrl-C to stop)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0
