"""The image signals of near-duplicate detection: exact pixel SHA-256 and imagehash's pHash of variants.

A web copy of an eval image is rarely the same file: it is resized (and the pipeline resizes it again,
to e.g. 256 px with a center crop or a border), recompressed, cropped a little, mirrored or recoloured.
pHash (DCT of a 32x32 grey thumbnail, 64 bits) shrugs off resizing, recompression and brightness/contrast
changes, but not flips or crops of more than a few percent. Rather than hashing many variants of every
sample on the hot path, the index stores the pHash of variants of each *eval* image, made once at build
time: the mirror, shifted crops, and the square center crop the pipeline takes of non-square images.
A lookup then hashes the sample once and searches all variants together.
"""

import hashlib

import imagehash
import numpy as np
from PIL import Image, ImageOps

# Crops of each eval image stored in the index: (kept fraction of width and height, anchor x, anchor y);
# anchors 0 = left/top, 0.5 = center, 1 = right/bottom. A web copy cropped by up to ~10% lands within a
# few bits of one of these (measured in bench/bench_dedup_quality.py, see bench/RESULTS.md).
CROPS = tuple(
    (keep, ax, ay)
    for keep in (0.92,)
    for ax in (0.0, 0.5, 1.0)
    for ay in (0.0, 0.5, 1.0)
)

# Below this spread of grey levels (0..255) in the 32x32 thumbnail pHash is noise around a flat image:
# every near-uniform image (placeholders, blank scans) would collide. Such images match by SHA-256 only.
MIN_THUMBNAIL_STD = 4.0


def pixel_sha256(image: Image.Image) -> bytes:
    """SHA-256 of the decoded RGB pixels and the size: equal for byte-different files of the same picture."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    h = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    h.update(rgb.tobytes())
    return h.digest()


def phash64(image: Image.Image) -> int:
    """imagehash's pHash as an unsigned 64-bit integer (bit order: imagehash's row-major flatten)."""
    bits = imagehash.phash(image).hash.ravel()
    return int(np.packbits(bits).view(">u8")[0])


def is_flat(image: Image.Image) -> bool:
    """True when the image is too uniform for a perceptual hash to mean anything."""
    thumb = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32)
    return float(thumb.std()) < MIN_THUMBNAIL_STD


def crop(image: Image.Image, keep: float, ax: float, ay: float) -> Image.Image:
    """The sub-image keeping `keep` of each side, placed at anchor (ax, ay)."""
    w, h = image.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    left, top = round((w - cw) * ax), round((h - ch) * ay)
    return image.crop((left, top, left + cw, top + ch))


def center_square(image: Image.Image) -> Image.Image:
    """The largest centred square: what a center-crop resize keeps of a non-square image."""
    w, h = image.size
    side = min(w, h)
    return image.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))


def _bar(arr: np.ndarray, tolerance: int) -> int:
    """How many leading rows of `arr` are one flat colour (the colour of its first pixel)."""
    rows = np.abs(arr - arr[0, 0]).max(axis=1) <= tolerance
    return len(rows) if rows.all() else int(np.argmin(rows))


def trim_border(image: Image.Image, tolerance: int = 6) -> Image.Image:
    """The image without letterbox bars: a "border" resize pads both opposite sides with one colour.

    Only a matching pair of bars (top and bottom, or left and right, of about the same thickness) is
    trimmed, so a picture with one dark edge keeps it. The index also stores the trimmed hash of eval
    images that look letterboxed themselves, so trimming a sample never loses a match.
    """
    arr = np.asarray(image.convert("L"), dtype=np.int16)
    h, w = arr.shape
    top, bottom = _bar(arr, tolerance), _bar(arr[::-1], tolerance)
    left, right = _bar(arr.T, tolerance), _bar(arr.T[::-1], tolerance)
    box = [0, 0, w, h]
    if top and bottom and abs(top - bottom) <= 2 + h // 100 and top + bottom < h - 8:
        box[1], box[3] = top, h - bottom
    if left and right and abs(left - right) <= 2 + w // 100 and left + right < w - 8:
        box[0], box[2] = left, w - right
    return image if box == [0, 0, w, h] else image.crop(tuple(box))


def eval_variants(image: Image.Image) -> list[tuple[str, int]]:
    """(method, pHash) of the variants of an eval image that the index stores; empty for flat images.

    `method` names the variant in overlap records: "phash" (the image), "mirror_phash", "crop_phash"
    (shifted crops and the square center crop, each also mirrored, so a flipped crop is found too).
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if is_flat(rgb):
        return []
    mirror = ImageOps.mirror(rgb)
    variants = [("phash", phash64(rgb)), ("mirror_phash", phash64(mirror))]
    trimmed = trim_border(rgb)
    if trimmed is not rgb:
        variants += [("phash", phash64(trimmed)), ("mirror_phash", phash64(ImageOps.mirror(trimmed)))]
    # A center-crop resize squares whatever copy it gets, so crops of a non-square image are also stored
    # as the square the pipeline would keep of them.
    bases = [rgb]
    if abs(rgb.width - rgb.height) > 0.02 * max(rgb.size):
        bases.append(center_square(rgb))
    crops = bases[1:] + [crop(b, keep, ax, ay) for b in bases for keep, ax, ay in CROPS]
    for c in crops:
        variants.append(("crop_phash", phash64(c)))
        variants.append(("crop_phash", phash64(ImageOps.mirror(c))))
    # Identical hashes (e.g. a symmetric image and its mirror) would only report the same item twice.
    seen, unique = set(), []
    for method, code in variants:
        if code not in seen:
            seen.add(code)
            unique.append((method, code))
    return unique


def sample_hash(image: Image.Image) -> int | None:
    """The pHash of a pipeline sample, or None when the sample is too flat to compare perceptually."""
    rgb = trim_border(image if image.mode == "RGB" else image.convert("RGB"))
    if is_flat(rgb):
        return None
    return phash64(rgb)
