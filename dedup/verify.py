"""Second stage of near-duplicate detection: verify a retrieved (sample, eval item) pair on aligned pixels.

pHash retrieval is recall-oriented: flat graphics (icons on white, flags, signs, text on a plain colour)
share their low-frequency DCT signs, so an icon's pHash lands within a few bits of thousands of other
icons. Each candidate pair is therefore checked on pixels before it counts as a match:

- the index keeps a small RGB thumbnail of every eval image (THUMB x THUMB, its aspect ratio beside it);
- the sample is reduced the same way, in up to three readings (letterbox bars trimmed, trimmed and shaved,
  as written; see sample_features);
- the sample is compared with every aligned region a copy can show of the eval image: the whole picture,
  crops keeping 95% and 90% of each side at a grid of anchors, the square centre of each (what a
  center-crop resize keeps), each also mirrored; only regions of the sample's aspect ratio. Regions are
  cut from the thumbnail by area averaging (sparse taps, compiled: ~0.4 ms per candidate on a quiet core);
- the score is the normalised cross-correlation of the two SIDE x SIDE colour grids at the best region,
  with one mean removed from all channels: brightness (a gain) and PIL-style contrast (a blend toward the
  mean) cancel, while the colours themselves still count, so a red banner does not match the same words on
  blue, nor most tricolours another (not France and Italy: 0.955). Measured against a per-channel mean and against gradient correlation
  (bench/RESULTS.md), this kept the most recall per false positive on flat graphics.

- a pair whose colours agree must also agree in structure, an independent second score: the correlation of
  grey horizontal/vertical differences (edges: letters, glyph outlines, corners) of the sample and each
  region, both reduced to the cells the thumbnail has in that region (a square centre of a 3:1 banner is
  11 thumbnail pixels wide; comparing a sharp sample with a blurred region would lose the edges). Colour
  alone cannot tell other words on one colour (0.95-0.96) or a cropped circle from a rounded square (0.93);
  their structure scores 0.3-0.5 against 0.6-1.0 for copies. Only the few pairs whose colours agree pay it.

Thresholds come from the measured curves in bench/RESULTS.md ("Retrieve, then verify", "Two scores").
"""

from functools import lru_cache

import numba
import numpy as np
from PIL import Image

from dedup.image_hashes import trim_border

THUMB = 32  # side of the stored thumbnail of each eval image (3 KiB per item)
SIDE = 16  # side of the grid compared
KEEPS = (1.0, 0.95, 0.9)  # fractions of each side a copy keeps (crops of up to 10% off two sides)
ANCHORS = (0.0, 0.25, 0.5, 0.75, 1.0)
FINE = 2 * THUMB  # side of the sample's grey grid, reduced to each region's cells for the second score
METHOD = "thumb_ncc+grad_ncc"  # name of the verification in overlap records
# A region is tried when its aspect ratio is within this factor (log) of the sample's: a 10% crop off one
# side, or resampling, changes it by less.
ASPECT_TOLERANCE = 0.15


def thumbnail(image: Image.Image) -> np.ndarray:
    """THUMB x THUMB x 3 uint8 of the image squashed to a square (aspect ratio kept apart by the caller)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.asarray(rgb.resize((THUMB, THUMB), Image.Resampling.BOX, reducing_gap=2.0), dtype=np.uint8)


@lru_cache(maxsize=256)
def _area_matrix(lo: float, hi: float, side: int = SIDE, source: int = THUMB) -> np.ndarray:
    """side x source weights averaging `source` pixels over `side` equal cells of [lo, hi] (0..1)."""
    edges = lo + (hi - lo) * np.arange(side + 1) / side
    src = np.arange(source + 1) / source
    overlap = (np.minimum(edges[1:, None], src[None, 1:]) - np.maximum(edges[:-1, None], src[None, :-1]))
    w = np.clip(overlap, 0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _boxes(aspect: float) -> list[tuple[float, float, float, float]]:
    """(x0, x1, y0, y1) in 0..1 of every region a copy may show of an image of width/height `aspect`."""
    boxes = []
    for keep in KEEPS:
        anchors = ANCHORS if keep < 1 else (0.5,)
        for ax in anchors:
            for ay in anchors:
                x0, y0 = (1 - keep) * ax, (1 - keep) * ay
                box = (x0, x0 + keep, y0, y0 + keep)
                boxes.append(box)
                # The square centre of the region, in the image's own pixels.
                w, h = keep * aspect, keep
                if abs(w - h) > 0.02 * max(w, h):
                    side = min(w, h)
                    cx, cy = (box[0] + box[1]) / 2, (box[2] + box[3]) / 2
                    hw, hh = side / aspect / 2, side / 2
                    boxes.append((cx - hw, cx + hw, cy - hh, cy + hh))
    return boxes


@lru_cache(maxsize=64)
def _region_matrices(aspect_key: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) area matrices of every region for an aspect ratio (rounded, so few are ever built)."""
    boxes = _boxes(aspect_key)
    rows = np.stack([_area_matrix(y0, y1) for _, _, y0, y1 in boxes])
    cols = np.stack([_area_matrix(x0, x1) for x0, x1, _, _ in boxes])
    return rows, cols


def _sparse(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, weight) arrays (regions, SIDE, TAPS) of the few thumbnail pixels each grid cell averages."""
    taps = int((matrices > 0).sum(axis=2).max())
    index = np.argsort(matrices <= 0, axis=2, kind="stable")[:, :, :taps]
    return index.astype(np.int64), np.take_along_axis(matrices, index, axis=2).astype(np.float32)


def _fits(aspect_key: float, sample_aspect_key: float) -> np.ndarray:
    boxes = np.array(_boxes(aspect_key))
    shapes = (boxes[:, 1] - boxes[:, 0]) * aspect_key / (boxes[:, 3] - boxes[:, 2])
    fits = np.abs(np.log(shapes / sample_aspect_key)) <= ASPECT_TOLERANCE
    return fits if fits.any() else np.ones(len(boxes), bool)


def _fitting_regions(aspect_key: float, sample_aspect_key: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the regions whose shape matches the sample's: a region squashed onto the grid only
    lines up with a sample of its own aspect ratio, so the others (half of them: the square centres of a
    non-square image, or the regions around them) are not tried. Fewer tries, fewer chance agreements."""
    rows, cols = _region_matrices(aspect_key)
    fits = _fits(aspect_key, sample_aspect_key)
    return rows[fits], cols[fits]


@lru_cache(maxsize=4096)
def _fine_regions(aspect_key: float, sample_aspect_key: float) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Per grid size (h, w), the (rows, cols) area matrices of the regions of the sample's shape at the
    resolution the thumbnail has there: a square centre of a 3:1 banner is 11 thumbnail pixels wide, and the
    sample is reduced to the same cells (a sharp sample against a blurred region loses its edges)."""
    boxes = [b for b, fit in zip(_boxes(aspect_key), _fits(aspect_key, sample_aspect_key)) if fit]
    groups: dict[tuple[int, int], list] = {}
    for x0, x1, y0, y1 in boxes:
        size = (max(4, round(THUMB * (y1 - y0))), max(4, round(THUMB * (x1 - x0))))
        groups.setdefault(size, []).append((_area_matrix(y0, y1, size[0]), _area_matrix(x0, x1, size[1])))
    return [(h, w, np.stack([r for r, _ in g]), np.stack([c for _, c in g])) for (h, w), g in groups.items()]


@lru_cache(maxsize=4096)
def _region_taps(aspect_key: float, sample_aspect_key: float) -> tuple[np.ndarray, ...]:
    rows, cols = _fitting_regions(aspect_key, sample_aspect_key)
    return (*_sparse(rows), *_sparse(cols))


@numba.njit(nogil=True, cache=False)
def _best_score(thumb, row_idx, row_w, col_idx, col_w, sample):
    """The compiled core of `score`: per region, the grid (a cell averages 2-3 thumbnail pixels each way, so
    sparse taps are ~20x less work than dense matrices), laid out as `_normalise` lays it out, and its
    correlation with the sample's (as is, and mirrored)."""
    regions, side, row_taps = row_idx.shape
    col_taps = col_idx.shape[2]
    grid = np.empty((side, side, 3), np.float32)
    best = -1.0
    for b in range(regions):
        mean = 0.0
        for i in range(side):
            for j in range(side):
                for c in range(3):
                    acc = 0.0
                    for k in range(row_taps):
                        y = row_idx[b, i, k]
                        wy = row_w[b, i, k]
                        for m in range(col_taps):
                            acc += wy * col_w[b, j, m] * thumb[y, col_idx[b, j, m], c]
                    grid[i, j, c] = acc
                    mean += acc
        mean /= side * side * 3
        for v in range(sample.shape[0]):  # the sample as is, then mirrored
            dot, norm, f = 0.0, 0.0, 0
            for i in range(side):
                for j in range(side):
                    for c in range(3):
                        x = grid[i, j, c] - mean
                        dot += x * sample[v, f]
                        norm += x * x
                        f += 1
            best = max(best, dot / max(np.sqrt(norm), 1e-3))
    return best


def _aspect_key(aspect: float) -> float:
    return round(float(np.clip(aspect, 0.2, 5.0)), 2)


def _regions(rows: np.ndarray, cols: np.ndarray, thumb: np.ndarray) -> np.ndarray:
    """(regions, SIDE, SIDE, 3): every region of the thumbnail averaged onto the grid (two batched products)."""
    t = rows @ thumb.astype(np.float32).reshape(THUMB, THUMB * 3)  # (regions, SIDE, THUMB * 3)
    t = t.reshape(len(rows), SIDE, THUMB, 3).transpose(0, 3, 1, 2)  # (regions, 3, SIDE, THUMB)
    return (t @ cols.transpose(0, 2, 1)[:, None]).transpose(0, 2, 3, 1)


def _normalise(grids: np.ndarray) -> np.ndarray:
    """(n, SIDE, SIDE, 3) float grids -> (n, SIDE * SIDE * 3) unit vectors, one mean removed from all
    channels together (not per channel: that would erase the background colour that tells a red banner
    from a blue one)."""
    colour = (grids - grids.mean(axis=(1, 2, 3), keepdims=True)).reshape(len(grids), -1)
    return colour / np.maximum(np.linalg.norm(colour, axis=1, keepdims=True), 1e-3)


def _gradients(gray: np.ndarray) -> np.ndarray:
    """(n, FINE, FINE) grey grids -> (n, D) unit vectors of their horizontal and vertical differences: the
    edges' places and signs, which a flat colour grid averages away (letters, glyph outlines, corners)."""
    g = np.concatenate([np.diff(gray, axis=2).reshape(len(gray), -1), np.diff(gray, axis=1).reshape(len(gray), -1)],
                       axis=1)
    g = g - g.mean(axis=1, keepdims=True)
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-3)


def _features(image: Image.Image) -> tuple[np.ndarray, float, np.ndarray]:
    thumb = thumbnail(image).astype(np.float32)
    rows, cols = _region_matrices(1.0)
    whole = _regions(rows[:1], cols[:1], thumb)[0]
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    gray = np.asarray(rgb.resize((FINE, FINE), Image.Resampling.BOX, reducing_gap=2.0), np.float32).mean(axis=2)
    return (_normalise(np.stack([whole, whole[:, ::-1]])), _aspect_key(image.width / image.height),
            np.stack([gray, gray[:, ::-1]]))


def sample_features(image: Image.Image) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Per reading of the sample, its colour grid vector (as is, and mirrored), its aspect ratio and its
    FINE x FINE grey grid (as is, and mirrored).

    Three readings when the sample has what look like letterbox bars: without them (a "border" resize padded
    the copy), without them and 2 more px, and as written (a banner's or icon's own plain margins, which a center crop keeps and
    trim_border cannot tell from padding). The better-scoring reading counts.
    """
    trimmed = trim_border(image)
    if trimmed is image:
        return [_features(image)]
    # Resampling and JPEG blur the bars' inner edge, which trim_border keeps (a 64 px sample of a 3:1 photo
    # kept 1-2 grey rows of 24 and scored 0.69): a third reading shaves it off the trimmed sides.
    dx, dy = int(trimmed.width < image.width), int(trimmed.height < image.height)
    shaved = trimmed.crop((2 * dx, 2 * dy, trimmed.width - 2 * dx, trimmed.height - 2 * dy))
    return [_features(trimmed), _features(shaved), _features(image)]


def score(sample: list[tuple[np.ndarray, float]], thumb: np.ndarray, aspect: float) -> float:
    """Best correlation, over the sample's readings, every region of its shape and mirror, of the sample
    with an eval item's thumbnail (-1..1)."""
    thumb = np.ascontiguousarray(thumb, dtype=np.float32)
    return max(float(_best_score(thumb, *_region_taps(_aspect_key(aspect), s[1]), s[0])) for s in sample)


def structure(sample: list[tuple[np.ndarray, float, np.ndarray]], thumb: np.ndarray, aspect: float) -> float:
    """Best correlation of the sample's FINE x FINE grey gradients with those of every region of the eval
    item's thumbnail of its shape (and mirror), over its readings (-1..1): the second, independent score."""
    gray = np.asarray(thumb, dtype=np.float32).mean(axis=2)
    best = -1.0
    for _, sample_aspect, sample_gray in sample:
        for h, w, rows, cols in _fine_regions(_aspect_key(aspect), sample_aspect):
            regions = rows @ gray @ cols.transpose(0, 2, 1)  # (regions, h, w)
            reduced = _area_matrix(0, 1, h, FINE) @ sample_gray @ _area_matrix(0, 1, w, FINE).T
            best = max(best, float((_gradients(regions) @ _gradients(reduced).T).max()))
    return best


def verify(sample: list[tuple[np.ndarray, float, np.ndarray]], thumb: np.ndarray, aspect: float,
           min_colour: float, min_structure: float) -> tuple[bool, float]:
    """(accepted, score) of a candidate pair: accepted when the colour score reaches min_colour AND the
    structure score reaches min_structure; the score is the one that decided (the lower of the two when both
    pass). The structure is only computed for pairs whose colours agree (a few per cent of candidates), so the
    compiled colour kernel stays the cost per candidate."""
    colour = score(sample, thumb, aspect)
    if colour < min_colour:
        return False, colour
    shape = structure(sample, thumb, aspect)
    return shape >= min_structure, min(colour, shape)


def score_dense(sample: list[tuple[np.ndarray, float]], thumb: np.ndarray, aspect: float) -> float:
    """`score` in plain numpy with dense matrices: the reference the compiled kernel is tested against."""
    best = -1.0
    for features, sample_aspect, _ in sample:
        grids = _normalise(_regions(*_fitting_regions(_aspect_key(aspect), sample_aspect), thumb))
        best = max(best, float((grids @ features.T).max()))
    return best
