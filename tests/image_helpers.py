"""Test pictures shared by the decontamination tests."""

import io

import numpy as np
from PIL import Image


def photo(seed: int, size=(320, 240)) -> Image.Image:
    """A smooth picture with structure at several scales, different for every seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.zeros((h, w, 3), np.float32)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 120)
        arr += rng.uniform(-120, 120, 3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
    return Image.fromarray(np.clip(arr + 128, 0, 255).astype(np.uint8))


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
