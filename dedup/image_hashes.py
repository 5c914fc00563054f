"""The image signals of near-duplicate detection: exact pixel SHA-256 and pHash (imagehash's, bit for bit) of variants.

A web copy of an eval image is rarely the same file: it is resized (and the pipeline resizes it again,
to e.g. 256 px with a center crop or a border), recompressed, cropped a little, mirrored or recoloured.
pHash (DCT of a 32x32 grey thumbnail, 64 bits) shrugs off resizing, recompression and brightness/contrast
changes, but not flips or crops of more than a few percent. Rather than hashing many variants of every
sample on the hot path, the index stores the pHash of variants of each *eval* image, made once at build
time: the mirror, shifted crops, and the square center crop the pipeline takes of non-square images.
A lookup then hashes the sample once and searches all variants together. pHash reads grey: an image whose
colours differ mostly in hue (pink on lime) is also hashed along its main colour axis (`hash_planes`).
"""

import hashlib

import numpy as np
from PIL import Image

# Crops of each eval image stored in the index: (kept fraction of width and height, anchor x, anchor y);
# anchors 0 = left/top, 0.5 = center, 1 = right/bottom. A web copy cropped by up to ~10% lands within a
# few bits of one of these (measured in bench/bench_dedup_quality.py, see bench/RESULTS.md).
CROPS = tuple(
    (keep, ax, ay)
    for keep in (0.95, 0.90)
    for ax in (0.0, 0.25, 0.5, 0.75, 1.0)
    for ay in (0.0, 0.25, 0.5, 0.75, 1.0)
)
# Eval variants are hashed from a grey copy whose shorter side is at most this: a pipeline sample is
# ~256 px anyway, and a 32x32 thumbnail of a huge image costs ~5 ms per variant.
WORK_SIDE = 384

# Below this spread of grey levels (0..255) in the 32x32 thumbnail pHash is noise around a flat image:
# every near-uniform image (placeholders, blank scans) would collide. Such images match by SHA-256 only.
MIN_THUMBNAIL_STD = 4.0
# An image whose colours vary this many times more along their main axis than in luma is also hashed along
# that axis (hash_planes); PIL's luma weights.
CHROMA_RATIO = 2.0
LUMA = np.array([0.299, 0.587, 0.114])


def pixel_sha256(image: Image.Image) -> bytes:
    """SHA-256 of the decoded RGB pixels and the size: equal for byte-different files of the same picture."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    h = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    h.update(rgb.tobytes())
    return h.digest()


def is_flat(image: Image.Image) -> bool:
    """True when the image is too uniform for a perceptual hash to mean anything."""
    thumb = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32)
    return float(thumb.std()) < MIN_THUMBNAIL_STD


def main_colour_axis(pixels: np.ndarray) -> np.ndarray:
    """The RGB direction along which the colours of (..., 3) `pixels` vary most (their first principal axis),
    its weights summing to 1 in absolute value as grey's and luma's do, the largest positive."""
    centred = pixels.reshape(-1, 3).astype(np.float64)
    centred -= centred.mean(axis=0)
    axis = np.linalg.eigh(centred.T @ centred)[1][:, -1]
    return axis / (np.abs(axis).sum() * np.sign(axis[np.argmax(np.abs(axis))]))


def hash_planes(image: Image.Image) -> list[Image.Image]:
    """The grey images pHash is taken of: the luma unless it is flat, and the projection on the image's main
    colour axis when its colours vary CHROMA_RATIO times more along that axis than in luma (pink letters on a
    lime field, a red shape on a green one of about the same grey: 5% of the benchmark's generated graphics had
    a flat luma). The axis is `main_colour_axis`; the projection is centred on 128. Brightness, contrast,
    resizing and JPEG keep the axis, so a copy's projection hashes alike; eval images and samples both get
    both planes, so a copy whose luma crosses the flatness line (a center crop enlarging the letters) still
    meets its eval image's colour plane. Empty when both are flat."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    grey = rgb.convert("L")
    planes = [] if is_flat(grey) else [grey]
    small = np.asarray(rgb.resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float64).reshape(-1, 3)
    axis = main_colour_axis(small)
    spread = (small @ axis).std()
    if spread >= MIN_THUMBNAIL_STD and spread >= CHROMA_RATIO * (small @ LUMA).std():
        plane = np.asarray(rgb, dtype=np.float32) @ axis.astype(np.float32)
        planes.append(Image.fromarray(np.clip(np.rint(plane - plane.mean() + 128), 0, 255).astype(np.uint8), "L"))
    return planes


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


def _bars(first: int, last: int, size: int, colours: tuple[int, int], tolerance: int) -> int:
    """Thickness to cut from both ends of one axis, 0 when the ends do not look like letterbox bars.

    A "border" resize pads two opposite sides with one colour and the same thickness (+-1 px). When the
    picture's own edge has that colour too (a dark sky, a black floor), that side's bar looks thicker, so
    the thinner of the two is the padding: cutting it from both sides keeps the whole picture.
    """
    if not first or not last or abs(colours[0] - colours[1]) > tolerance:
        return 0
    cut = min(first, last)
    return cut if size - 2 * cut > 8 else 0


def trim_border(image: Image.Image, tolerance: int = 6) -> Image.Image:
    """The image without letterbox bars: a "border" resize pads both opposite sides with one colour.

    Only bars on both opposite sides (top and bottom, or left and right) in one colour are trimmed, by
    the thinner bar's thickness, so a picture with one dark edge keeps it. The index also stores the
    trimmed hash of eval images (and of their square center crop) that look letterboxed themselves, so
    trimming a sample never loses a match.
    """
    arr = np.asarray(image.convert("L"), dtype=np.int16)
    h, w = arr.shape
    dy = _bars(_bar(arr, tolerance), _bar(arr[::-1], tolerance), h, (arr[0, 0], arr[-1, -1]), tolerance)
    dx = _bars(_bar(arr.T, tolerance), _bar(arr.T[::-1], tolerance), w, (arr[0, 0], arr[-1, -1]), tolerance)
    return image if not (dx or dy) else image.crop((dx, dy, w - dx, h - dy))


def hash_thumbnail(pixels: np.ndarray) -> int:
    """imagehash.phash of a 32x32 grey thumbnail, as an unsigned 64-bit integer (bit order: imagehash's
    row-major flatten).

    Bit for bit imagehash's steps with less Python around them (the shard writer runs this holding the GIL):
    the median of the 64 coefficients is the mean of the sorted middle two."""
    import scipy.fftpack

    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:8, :8]
    middle = np.sort(dct, axis=None)[31:33]
    return int(np.packbits(dct > (middle[0] + middle[1]) / 2).view(">u8")[0])


def thumbnail(grey: Image.Image) -> np.ndarray:
    """The 32x32 thumbnail imagehash.phash hashes (grey input; Lanczos, as imagehash)."""
    return np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS))


def eval_variants(image: Image.Image) -> list[tuple[str, int]]:
    """(method, pHash) of the variants of an eval image that the index stores, of each of its hash_planes;
    empty for flat images.

    `method` names the variant in overlap records: "phash" (the image, also with letterbox-like bars
    trimmed), "mirror_phash", "crop_phash" (shifted crops and the square center crop, each also
    mirrored, so a flipped crop is found too). A mirror is hashed from the mirrored 32x32 thumbnail, which
    gives the same bits as hashing the mirrored image (pHash's resize is symmetric) at a fraction of the cost.
    """
    codes = [code for plane in hash_planes(image) for code in _plane_variants(plane)]
    # Identical hashes (e.g. a symmetric image and its mirror) would only report the same item twice.
    seen, unique = set(), []
    for method, code in codes:
        if code not in seen:
            seen.add(code)
            unique.append((method, code))
    return unique


def _plane_variants(grey: Image.Image) -> list[tuple[str, int]]:
    """eval_variants of one grey plane (hash_planes), duplicates left in."""
    if min(grey.size) > WORK_SIDE:
        scale = WORK_SIDE / min(grey.size)
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                           Image.Resampling.LANCZOS)
    variants: list[tuple[str, Image.Image]] = [("phash", grey)]
    # A center-crop resize squares whatever copy it gets, so the square it would keep of the image and of
    # its crops is stored too.
    bases = [grey]
    if abs(grey.width - grey.height) > 0.02 * max(grey.size):
        bases.append(center_square(grey))
    for base in bases:
        trimmed = trim_border(base)
        if trimmed is not base:
            variants.append(("phash", trimmed))
    variants += [("crop_phash", b) for b in bases[1:]]
    codes = []
    for method, variant in variants:
        thumb = thumbnail(variant)
        codes.append((method, hash_thumbnail(thumb)))
        codes.append(("mirror_phash" if method == "phash" else method, hash_thumbnail(thumb[:, ::-1])))
    # Shifted crops are not mirrored: a copy both flipped and cropped is rare, and mirroring would double
    # the index (and the lookup time and false-positive chances with it).
    for b in bases:
        for keep, ax, ay in CROPS:
            codes.append(("crop_phash", hash_thumbnail(thumbnail(crop(b, keep, ax, ay)))))
    # A copy cropped off-centre and then squared by a center-crop resize shows the square centre of that crop,
    # which lies outside the centre square by up to 5% of the long side (a 3:1 banner: 15% of the square).
    for keep, ax, ay in CROPS if len(bases) > 1 else ():
        if (ax, ay) != (0.5, 0.5) and {ax, ay} <= {0.0, 0.5, 1.0}:
            codes.append(("crop_phash", hash_thumbnail(thumbnail(center_square(crop(grey, keep, ax, ay))))))
    return codes


def sample_hashes(image: Image.Image, trimmed: Image.Image | None = None) -> list[int]:
    """The pHashes a sample is looked up by: without its apparent letterbox bars, and as it is when it has
    some. A "border" resize pads a copy with bars, but an icon's or a banner's own plain margins look the
    same to trim_border, and cutting them moves the hash far from the eval image's (14-30 bits measured).
    `trimmed`: trim_border of the image in RGB, when the caller has it already."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    trimmed = trim_border(rgb) if trimmed is None else trimmed
    readings = [trimmed] if trimmed is rgb else [trimmed, rgb]
    return [hash_thumbnail(thumbnail(plane)) for r in readings for plane in hash_planes(r)]
