"""Second stage of near-duplicate detection: verify a retrieved (sample, eval item) pair on aligned pixels.

pHash retrieval is recall-oriented: flat graphics (icons on white, flags, signs, text on a plain colour)
share their low-frequency DCT signs, so an icon's pHash lands within a few bits of thousands of other
icons. Each candidate pair is therefore checked on pixels before it counts as a match:

- the index keeps a small RGB thumbnail of every eval image (THUMB x THUMB, its aspect ratio beside it);
- the sample (letterbox bars trimmed) is reduced the same way;
- the sample is compared with every aligned region a copy can show of the eval image: the whole picture,
  crops keeping 95% and 90% of each side at a grid of anchors, the square centre of each (what a
  center-crop resize keeps), each also mirrored. Regions are cut from the thumbnail with area-averaging
  matrices, so one matrix product per candidate yields all of them;
- the score is the smallest of two normalised cross-correlations over a SIDE x SIDE grid, at the best region:
  colour (per-channel mean removed, one norm for all channels, so brightness and contrast changes cancel)
  and gradients (horizontal and vertical differences of grey). Flat areas contribute zero to both, and
  gradients score only where edges coincide: two different icons on white share a bright background and
  a central blob (high colour correlation) but not their edges.

Thresholds come from the measured curves in bench/RESULTS.md ("Retrieve, then verify").
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
METHOD = "thumb_ncc"
# A region is tried when its aspect ratio is within this factor (log) of the sample's: a 10% crop off one
# side, or resampling, changes it by less.
ASPECT_TOLERANCE = 0.15  # name of the verification in overlap records


def thumbnail(image: Image.Image) -> np.ndarray:
    """THUMB x THUMB x 3 uint8 of the image squashed to a square (aspect ratio kept apart by the caller)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.asarray(rgb.resize((THUMB, THUMB), Image.Resampling.BOX, reducing_gap=2.0), dtype=np.uint8)


def _area_matrix(lo: float, hi: float) -> np.ndarray:
    """SIDE x THUMB weights averaging the thumbnail's pixels over SIDE equal cells of [lo, hi] (0..1)."""
    edges = lo + (hi - lo) * np.arange(SIDE + 1) / SIDE
    src = np.arange(THUMB + 1) / THUMB
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


@lru_cache(maxsize=4096)
def _region_taps(aspect_key: float, sample_aspect_key: float) -> tuple[np.ndarray, ...]:
    """Sparse taps of the regions whose shape matches the sample's: a region squashed onto the grid only
    lines up with a sample of its own aspect ratio, so the others (half of them: the square centres of a
    non-square image, or the regions around them) are not tried. Fewer tries, fewer chance agreements."""
    rows, cols = _region_matrices(aspect_key)
    boxes = np.array(_boxes(aspect_key))
    shapes = (boxes[:, 1] - boxes[:, 0]) * aspect_key / (boxes[:, 3] - boxes[:, 2])
    fits = np.abs(np.log(shapes / sample_aspect_key)) <= ASPECT_TOLERANCE
    if fits.any():
        rows, cols = rows[fits], cols[fits]
    return (*_sparse(rows), *_sparse(cols))


@numba.njit(nogil=True, cache=False)
def _best_score(thumb, row_idx, row_w, col_idx, col_w, colour, grad):
    """The compiled core of `score`: per region, the grid (a cell averages 2-3 thumbnail pixels each way, so
    sparse taps are ~20x less work than dense matrices), its colour and gradient vectors laid out as
    `_normalise` lays them out, and their correlations with the sample's (as is, and mirrored)."""
    regions, side, taps = row_idx.shape
    grid = np.empty((side, side, 3), np.float32)
    grey = np.empty((side, side), np.float32)
    best = -1.0
    for b in range(regions):
        for i in range(side):
            for j in range(side):
                for c in range(3):
                    acc = 0.0
                    for k in range(taps):
                        y = row_idx[b, i, k]
                        wy = row_w[b, i, k]
                        for m in range(taps):
                            acc += wy * col_w[b, j, m] * thumb[y, col_idx[b, j, m], c]
                    grid[i, j, c] = acc
        for c in range(3):
            mean = 0.0
            for i in range(side):
                for j in range(side):
                    mean += grid[i, j, c]
            mean /= side * side
            for i in range(side):
                for j in range(side):
                    grid[i, j, c] -= mean
        for i in range(side):
            for j in range(side):
                grey[i, j] = 0.299 * grid[i, j, 0] + 0.587 * grid[i, j, 1] + 0.114 * grid[i, j, 2]
        for v in range(colour.shape[0]):  # the sample as is, then mirrored
            dot, norm, f = 0.0, 0.0, 0
            for i in range(side):
                for j in range(side):
                    for c in range(3):
                        x = grid[i, j, c]
                        dot += x * colour[v, f]
                        norm += x * x
                        f += 1
            c_score = dot / max(np.sqrt(norm), 1e-3)
            dot, norm, f = 0.0, 0.0, 0
            for i in range(side - 1):
                for j in range(side):
                    x = grey[i + 1, j] - grey[i, j]
                    dot += x * grad[v, f]
                    norm += x * x
                    f += 1
            for i in range(side):
                for j in range(side - 1):
                    x = grey[i, j + 1] - grey[i, j]
                    dot += x * grad[v, f]
                    norm += x * x
                    f += 1
            g_score = dot / max(np.sqrt(norm), 1e-3)
            best = max(best, min(c_score, g_score))
    return best


def _aspect_key(aspect: float) -> float:
    return round(float(np.clip(aspect, 0.2, 5.0)), 2)


def _regions(rows: np.ndarray, cols: np.ndarray, thumb: np.ndarray) -> np.ndarray:
    """(regions, SIDE, SIDE, 3): every region of the thumbnail averaged onto the grid (two batched products)."""
    t = rows @ thumb.astype(np.float32).reshape(THUMB, THUMB * 3)  # (regions, SIDE, THUMB * 3)
    t = t.reshape(len(rows), SIDE, THUMB, 3).transpose(0, 3, 1, 2)  # (regions, 3, SIDE, THUMB)
    return (t @ cols.transpose(0, 2, 1)[:, None]).transpose(0, 2, 3, 1)


def _normalise(grids: np.ndarray) -> np.ndarray:
    """(n, SIDE, SIDE, 3) float grids -> (n, features) unit vectors of colour and of grey gradients."""
    colour = grids - grids.mean(axis=(1, 2), keepdims=True)
    grey = grids @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grad = np.concatenate([np.diff(grey, axis=1).reshape(len(grids), -1),
                           np.diff(grey, axis=2).reshape(len(grids), -1)], axis=1)
    colour = colour.reshape(len(grids), -1)

    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-3)

    return unit(colour), unit(grad)


def _features(image: Image.Image) -> tuple[np.ndarray, np.ndarray, float]:
    thumb = thumbnail(image).astype(np.float32)
    rows, cols = _region_matrices(1.0)
    whole = _regions(rows[:1], cols[:1], thumb)[0]
    return (*_normalise(np.stack([whole, whole[:, ::-1]])), _aspect_key(image.width / image.height))


def sample_features(image: Image.Image) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Per reading of the sample, its colour and gradient vectors (as is, and mirrored) and aspect ratio.

    Two readings when the sample has what look like letterbox bars: without them (a "border" resize padded
    the copy) and as written (a banner's or icon's own plain margins, which a center crop keeps and
    trim_border cannot tell from padding). The better-scoring reading counts.
    """
    trimmed = trim_border(image)
    return [_features(trimmed)] + ([_features(image)] if trimmed is not image else [])


def score(sample: list[tuple[np.ndarray, np.ndarray, float]], thumb: np.ndarray, aspect: float) -> float:
    """Best agreement, over the sample's readings, every region of its shape and mirror, of the sample with
    an eval item's thumbnail (-1..1)."""
    thumb = np.ascontiguousarray(thumb, dtype=np.float32)
    return max(float(_best_score(thumb, *_region_taps(_aspect_key(aspect), s[2]), s[0], s[1])) for s in sample)


def score_dense(sample: list[tuple[np.ndarray, np.ndarray, float]], thumb: np.ndarray, aspect: float) -> float:
    """`score` in plain numpy, trying every region with dense matrices: the reference the compiled kernel
    is tested against (they agree when every region fits the sample's shape)."""
    rows, cols = _region_matrices(_aspect_key(aspect))
    colour, grad = _normalise(_regions(rows, cols, thumb))
    return max(float(np.minimum(colour @ s[0].T, grad @ s[1].T).max()) for s in sample)
