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

import numpy as np
from PIL import Image

THUMB = 32  # side of the stored thumbnail of each eval image (3 KiB per item)
SIDE = 16  # side of the grid compared
KEEPS = (1.0, 0.95, 0.9)  # fractions of each side a copy keeps (crops of up to 10% off two sides)
ANCHORS = (0.0, 0.25, 0.5, 0.75, 1.0)
METHOD = "thumb_ncc"  # name of the verification in overlap records


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


def sample_features(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The sample's colour and gradient vectors, as the whole region of its own thumbnail, and mirrored."""
    thumb = thumbnail(image).astype(np.float32)
    rows, cols = _region_matrices(1.0)
    whole = _regions(rows[:1], cols[:1], thumb)[0]
    return _normalise(np.stack([whole, whole[:, ::-1]]))


def score(sample: tuple[np.ndarray, np.ndarray], thumb: np.ndarray, aspect: float) -> float:
    """Best agreement, over every region and mirror, of the sample with an eval item's thumbnail (-1..1)."""
    rows, cols = _region_matrices(_aspect_key(aspect))
    grids = _regions(rows, cols, thumb)
    colour, grad = _normalise(grids)
    c = colour @ sample[0].T  # (regions, 2: as is / mirrored)
    g = grad @ sample[1].T
    return float(np.minimum(c, g).max())
