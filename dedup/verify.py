"""Second stage of near-duplicate detection: verify a retrieved (sample, eval item) pair on aligned pixels.

pHash retrieval is recall-oriented: flat graphics (icons on white, flags, signs, text on a plain colour)
share their low-frequency DCT signs, so an icon's pHash lands within a few bits of thousands of other
icons. Each candidate pair is therefore checked on pixels before it counts as a match. The index keeps a
THUMB_PIXELS RGB thumbnail of every eval image in its own aspect ratio (a 400 x 120 banner keeps 116 x 35 px,
not a squashed 64 x 64, so its letters survive); the sample is kept at SAMPLE_SIDE px in up to three readings
(letterbox bars trimmed, trimmed and shaved, as written; see sample_features).

1. Alignment. The sample is compared with every aligned region a copy can show of the eval image: the whole
   picture, crops keeping 95% and 90% of each side at a grid of anchors, the square centre of each (what a
   center-crop resize keeps), each also mirrored; only regions of the sample's aspect ratio. This coarse
   search runs on SIDE x SIDE colour grids cut from a squashed COARSE px copy of the thumbnail (sparse taps,
   compiled): the normalised cross-correlation, one mean removed from all channels, is the `colour` score,
   and a pair below `min_colour` stops here (most candidates). The best region is then refined on the
   thumbnail's own pixels by moving each side by half pixels (`refine`).
2. Decision, at the aligned region, on the thumbnail's pixels, between a copy and a look-alike. The sample is
   fitted as a * eval + b (one gain and offset for all channels: brightness and contrast changes cancel, a
   change of hue does not), then two shares must both be high:
   - `pixels`: the share of the sample's pixels whose colour is within PIXEL_TOLERANCE of the fitted eval
     pixel at the same place or a neighbouring one (1 px of misalignment and resampling blur tolerated), and
     whose hue (channel differences: the offset leaves them, the gain scales them) is too; the lower share
     counts. Overlay text and watermarks spoil a minority; France against Italy a third; an emoji in other
     colours far more; a pink field fitted onto a brown one agrees in colour, not in hue;
   - `edges`: the share of the eval region's strong edges (letters, outlines, corners; by orientation and
     sign) that the sample has, in place (1) or 1 px across (1/2): a chamfer-style recall. Other words on
     the same colour, a circle against a rounded square, a drawing with other details lose their edges; a
     copy under overlay text keeps most of them. Each ninth of the region holding enough of them must keep
     a share too (a look-alike differs in one spot). A region without strong grey edges is tested on the
     weaker steps along its own main colour axis (faint letters, or another hue at the same grey); one
     with none of those either passes when its colours vary (a smooth photo): a plain field proves nothing;
   - no detail of the eval region may be missing where the sample is plain (`lost_to_plain`): a star
     without its centre dot, a face without its eyes. Overlay text hides edges under letters of its own.
   The former 16x16 colour correlation on a 32 px thumbnail could not tell these apart (bench/RESULTS.md).

Thresholds come from the measured curves in bench/RESULTS.md ("Verification at 64 px").
"""

from functools import lru_cache

import numba
import numpy as np
from PIL import Image

from dedup.image_hashes import main_colour_axis, trim_border

THUMB_PIXELS = 64 * 64  # pixels of the stored thumbnail of each eval image (12 KiB, memory-mapped at lookup)
MIN_THUMB_SIDE, MAX_THUMB_SIDE = 32, 128  # its sides, in the image's aspect ratio (clamped past 4:1)
COARSE = 32  # the alignment search runs on the thumbnail squashed to COARSE x COARSE
SIDE = 16  # side of the colour grid the alignment compares
SAMPLE_SIDE = MAX_THUMB_SIDE  # the sample is kept at this side (squashed) and reduced to each region's cells
KEEPS = (1.0, 0.95, 0.9)  # fractions of each side a copy keeps (crops of up to 10% off two sides)
ANCHORS = (0.0, 0.25, 0.5, 0.75, 1.0)
METHOD = "align64+pixels+hue+local-edges+details"  # name of the verification in overlap records
# A region is tried when its aspect ratio is within this factor (log) of the sample's: a 10% crop off one
# side, or resampling, changes it by less.
ASPECT_TOLERANCE = 0.15
# The gain a brightness and contrast change may apply, (0.8..1.2)^2 in the benchmark. Wider lets a flat colour
# be fitted onto another: at a gain of 0.5, (31, 240, 54) green fits (99, 172, 99) within the tolerance.
GAINS = (0.7, 1.45)
PIXEL_TOLERANCE = 32.0  # largest colour difference (of 255, max over channels) of an agreeing pixel
# A strong edge of the eval region: a grey step of at least this (of 255) to the next pixel; the sample
# needs half of it (JPEG and resampling soften its steps). Small letters blurred into a 64 px thumbnail step
# by 30-60: at 48 some banners had fewer than MIN_EDGE_PIXELS strong edges and passed the test vacuously.
EDGE_STEP = 24.0
# A region with fewer strong grey edges than MIN_EDGE_PIXELS is tested again on its steps along its own main
# colour axis, of WEAK_EDGE_STEP: faint words or shapes on a near colour, or of another hue at the same grey
# (pink letters on lime), are details a copy keeps; a smooth photo has none. The sample needs a third of the
# step: a photo's faint stripes, cropped and resampled, keep less than half of theirs.
WEAK_EDGE_STEP = 12.0
GREY = np.full(3, 1 / 3, np.float32)
REFINE_ROUNDS = 4  # rounds of moving each side of the aligned region by half a pixel
MIN_EDGE_PIXELS = 8  # fewer strong edges than this: nothing for the edge test to contradict
PLAIN_STD = 6.0  # ... and a region whose channels vary less than this (std, of 255) is a plain field
# A ninth of the region must keep 1 / BLOCK_EDGE_SCALE of what the whole region must (0.5 at min_edges 0.8).
BLOCK_EDGE_SCALE = 1.6
# This many of the eval region's strong-edge pixels where the sample is plain (no step of half the strength within
# 1 px, any orientation) reject the pair: a detail the sample does not have. Its outer BORDER_RING px are left
# out: a crop's edge row is where a 1/4 px misalignment loses a line.
MAX_LOST_TO_PLAIN = 10
BORDER_RING = 2


def thumb_shape(aspect: float) -> tuple[int, int]:
    """(height, width) of the thumbnail of an image of width/height `aspect`: at most THUMB_PIXELS pixels."""
    root = float(np.sqrt(np.clip(aspect, 1e-3, 1e3)))
    return (int(np.clip(np.floor(64 / root), MIN_THUMB_SIDE, MAX_THUMB_SIDE)),
            int(np.clip(np.floor(64 * root), MIN_THUMB_SIDE, MAX_THUMB_SIDE)))


def thumbnail(image: Image.Image) -> np.ndarray:
    """(h, w, 3) uint8 thumbnail of the image, of thumb_shape (its aspect ratio, THUMB_PIXELS at most)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    h, w = thumb_shape(image.width / image.height)
    return np.asarray(rgb.resize((w, h), Image.Resampling.BOX, reducing_gap=2.0), dtype=np.uint8)


@lru_cache(maxsize=4096)
def _area_matrix(lo: float, hi: float, side: int = SIDE, source: int = COARSE) -> np.ndarray:
    """side x source weights averaging `source` pixels over `side` equal cells of [lo, hi] (0..1)."""
    edges = lo + (hi - lo) * np.arange(side + 1) / side
    src = np.arange(source + 1) / source
    overlap = (np.minimum(edges[1:, None], src[None, 1:]) - np.maximum(edges[:-1, None], src[None, :-1]))
    w = np.clip(overlap, 0, None)
    return (w / np.maximum(w.sum(axis=1, keepdims=True), 1e-9)).astype(np.float32)


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


def _sparse(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, weight) arrays (..., cells, TAPS) of the few source pixels each cell averages."""
    taps = int((matrices > 0).sum(axis=-1).max())
    index = np.argsort(matrices <= 0, axis=-1, kind="stable")[..., :taps]
    return index.astype(np.int64), np.take_along_axis(matrices, index, axis=-1).astype(np.float32)


@lru_cache(maxsize=4096)
def _fitting_boxes(aspect_key: float, sample_aspect_key: float) -> np.ndarray:
    """The regions whose shape matches the sample's: a region squashed onto the grid only lines up with a
    sample of its own aspect ratio, so the others (half of them: the square centres of a non-square image,
    or the regions around them) are not tried. Fewer tries, fewer chance agreements."""
    boxes = np.array(_boxes(aspect_key))
    fits = _shape_fits((boxes[:, 1] - boxes[:, 0]) * aspect_key / (boxes[:, 3] - boxes[:, 2]), sample_aspect_key)
    return boxes[fits] if fits.any() else boxes


def _shape_fits(region_shapes, sample_aspects) -> np.ndarray:
    """Whether regions of width/height `region_shapes` line up with samples of `sample_aspects` (broadcast)."""
    return np.abs(np.log(region_shapes / sample_aspects)) <= ASPECT_TOLERANCE


@lru_cache(maxsize=4096)
def _region_taps(aspect_key: float, sample_aspect_key: float) -> tuple[np.ndarray, ...]:
    boxes = _fitting_boxes(aspect_key, sample_aspect_key)
    rows = np.stack([_area_matrix(y0, y1) for _, _, y0, y1 in boxes])
    cols = np.stack([_area_matrix(x0, x1) for x0, x1, _, _ in boxes])
    return (*_sparse(rows), *_sparse(cols))


@numba.njit(nogil=True, cache=True)
def _best_region(thumb, row_idx, row_w, col_idx, col_w, sample):
    """The compiled coarse search: per region, the SIDE x SIDE grid (a cell averages 2-3 thumbnail pixels
    each way, so sparse taps are ~20x less work than dense matrices), laid out as `_normalise` lays it out,
    and its correlation with the sample's (as is, and mirrored). Returns (score, region, mirrored)."""
    regions, side, row_taps = row_idx.shape
    col_taps = col_idx.shape[2]
    grid = np.empty((side, side, 3), np.float32)
    best, best_region, best_mirror = -1.0, 0, 0
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
            s = dot / max(np.sqrt(norm), 1e-3)
            if s > best:
                best, best_region, best_mirror = s, b, v
    return best, best_region, best_mirror


@numba.njit(nogil=True, cache=True)
def _resample(image, row_idx, row_w, col_idx, col_w):
    """(h, w, 3) area average of `image` over the cells given by sparse row and column taps."""
    h, row_taps = row_idx.shape
    w, col_taps = col_idx.shape
    out = np.zeros((h, w, 3), np.float32)
    for i in range(h):
        for k in range(row_taps):
            y, wy = row_idx[i, k], row_w[i, k]
            for j in range(w):
                for m in range(col_taps):
                    weight, x = wy * col_w[j, m], col_idx[j, m]
                    for c in range(3):
                        out[i, j, c] += weight * image[y, x, c]
    return out


def _aspect_key(aspect: float) -> float:
    return round(float(np.clip(aspect, 0.2, 5.0)), 2)


def _normalise(grids: np.ndarray) -> np.ndarray:
    """(n, ...) float grids -> (n, D) unit vectors, one mean removed from all channels together (not per
    channel: that would erase the background colour that tells a red banner from a blue one)."""
    colour = grids.reshape(len(grids), -1)
    colour = colour - colour.mean(axis=1, keepdims=True)
    return colour / np.maximum(np.linalg.norm(colour, axis=1, keepdims=True), 1e-3)


def _block_mean(image: np.ndarray, side: int) -> np.ndarray:
    """(side, side, 3) means of the blocks of a square (n, n, 3) image, n a multiple of `side`. Summed along
    contiguous axes: numpy's mean over axes (1, 3) of the 5-d view takes 7x as long (0.4 ms at 128 px, paid
    per reading of every sample looked up)."""
    n = image.shape[0]
    k = n // side
    return image.reshape(side, k, n * 3).sum(axis=1).reshape(side, side, k, 3).sum(axis=2) / (k * k)


def _features(image: Image.Image) -> tuple[np.ndarray, float, np.ndarray, tuple[int, int]]:
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    fine = np.asarray(rgb.resize((SAMPLE_SIDE, SAMPLE_SIDE), Image.Resampling.BOX, reducing_gap=2.0), np.float32)
    grid = _block_mean(fine, SIDE)
    return _normalise(np.stack([grid, grid[:, ::-1]])), _aspect_key(image.width / image.height), fine, image.size


def sample_features(image: Image.Image, trimmed: Image.Image | None = None
                    ) -> list[tuple[np.ndarray, float, np.ndarray, tuple[int, int]]]:
    """Per reading of the sample: its colour grid vector (as is, and mirrored), its aspect ratio, its
    SAMPLE_SIDE x SAMPLE_SIDE RGB pixels and its own size (width, height) in pixels.

    Three readings when the sample has what look like letterbox bars: without them (a "border" resize padded
    the copy), without them and 2 more px, and as written (a banner's or icon's own plain margins, which a
    center crop keeps and trim_border cannot tell from padding). The best-aligned reading counts.
    `trimmed`: trim_border(image), when the caller has it already (the lookup, from hashing the sample).
    """
    trimmed = trim_border(image) if trimmed is None else trimmed
    if trimmed is image:
        return [_features(image)]
    # Resampling and JPEG blur the bars' inner edge, which trim_border keeps (a 64 px sample of a 3:1 photo
    # kept 1-2 grey rows of 24 and scored 0.69): a third reading shaves it off the trimmed sides.
    dx, dy = int(trimmed.width < image.width), int(trimmed.height < image.height)
    shaved = trimmed.crop((2 * dx, 2 * dy, trimmed.width - 2 * dx, trimmed.height - 2 * dy))
    return [_features(trimmed), _features(shaved), _features(image)]


def coarse(thumb: np.ndarray) -> np.ndarray:
    """The COARSE x COARSE (squashed) copy of a thumbnail the alignment search runs on."""
    h, w = thumb.shape[:2]
    return _resample(np.ascontiguousarray(thumb, dtype=np.float32), *_taps(0.0, 1.0, COARSE, h),
                     *_taps(0.0, 1.0, COARSE, w))


def align(sample: list, thumb: np.ndarray, aspect: float) -> tuple[float, int, np.ndarray, bool]:
    """(colour score, reading, box (x0, x1, y0, y1), mirrored) of the best region over the sample's readings."""
    small = coarse(thumb)
    key = _aspect_key(aspect)
    best = (-2.0, 0, None, False)
    for r, (features, sample_aspect, *_) in enumerate(sample):
        s, region, mirror = _best_region(small, *_region_taps(key, sample_aspect), features)
        if s > best[0]:
            best = (float(s), r, _fitting_boxes(key, sample_aspect)[region], bool(mirror))
    return best


@lru_cache(maxsize=65536)
def _taps(lo: float, hi: float, side: int, source: int) -> tuple[np.ndarray, np.ndarray]:
    return _sparse(_area_matrix(lo, hi, side, source))


def _cut(thumb: np.ndarray, box, h: int, w: int) -> np.ndarray:
    """The (h, w, 3) cells of region `box` of the thumbnail (box corners rounded to 1/4 px, so the taps of
    the few distinct boxes are cached)."""
    th, tw = thumb.shape[:2]
    x0, x1 = (round(v * 4 * tw) / (4 * tw) for v in box[:2])
    y0, y1 = (round(v * 4 * th) / (4 * th) for v in box[2:])
    return _resample(thumb, *_taps(y0, y1, h, th), *_taps(x0, x1, w, tw))


@numba.njit(nogil=True, cache=True)
def _ncc(a, b):
    """Normalised cross-correlation of two float32 arrays of one shape (one mean each)."""
    a, b = a.ravel(), b.ravel()
    ma, mb = a.mean(), b.mean()
    ab, aa, bb = 0.0, 0.0, 0.0
    for i in range(a.size):
        x, y = a[i] - ma, b[i] - mb
        ab += x * y
        aa += x * x
        bb += y * y
    return ab / max(np.sqrt(aa * bb), 1e-3)


def refine(sample: list, thumb: np.ndarray, reading: int, box, mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
    """(sample cells, eval cells), both (h, w, 3) float32 on the thumbnail's own pixels in the aligned region.

    The coarse anchors are 1.6 px apart in a 64 px thumbnail and crops keep any share of a side, not only
    95% or 90%: each side of the region is moved by half pixels while the correlation improves (REFINE_ROUNDS
    at most), so edges can then be compared in place. A sample smaller than the region's thumbnail pixels
    (a 64 px shard of a banner: 64 x 21) is compared at its own size, the region reduced to it: upsampled, its
    edges would be spread over pixels where the thumbnail's are sharp.
    """
    fine, (sw, sh) = sample[reading][2:]
    if mirrored:
        fine = fine[:, ::-1]
    th, tw = thumb.shape[:2]
    h = max(8, min(round(th * (box[3] - box[2])), sh))
    w = max(8, min(round(tw * (box[1] - box[0])), sw))
    cells = _resample(np.ascontiguousarray(fine), *_taps(0.0, 1.0, h, SAMPLE_SIDE), *_taps(0.0, 1.0, w, SAMPLE_SIDE))
    thumb = np.asarray(thumb, dtype=np.float32)
    box = list(box)
    region = _cut(thumb, box, h, w)
    best = _ncc(region, cells)
    steps = (0.5 / tw, 0.5 / tw, 0.5 / th, 0.5 / th)
    for _ in range(REFINE_ROUNDS):
        moved = False
        for side in range(4):
            for sign in (-1.0, 1.0):
                tried = list(box)
                tried[side] = min(1.0, max(0.0, box[side] + sign * steps[side]))
                if tried[side] == box[side]:
                    continue  # a region at the thumbnail's border only moves inwards
                cut = _cut(thumb, tried, h, w)
                s = _ncc(cut, cells)
                if s > best + 1e-4:
                    best, region, box, moved = s, cut, tried, True
                    break
        if not moved:
            break
    return cells, region


@numba.njit(nogil=True, cache=True)
def _agreeing(cells, fitted, tolerance, region, gain):
    """(colour, hue): shares of the sample's pixels that agree with the eval region at the same place or one of
    its 8 neighbours (1 px of misalignment or resampling blur). Colour: max over channels of the difference
    from the fitted eval pixel within `tolerance`. Hue: the same for the channel differences (R - G, G - B),
    which the fitted offset leaves unchanged and the gain scales, compared with `gain` times the eval's."""
    h, w = cells.shape[:2]
    colour, hue = 0, 0
    for i in range(h):
        for j in range(w):
            best, best_hue = np.inf, np.inf
            rg, gb = cells[i, j, 0] - cells[i, j, 1], cells[i, j, 1] - cells[i, j, 2]
            for y in range(max(i - 1, 0), min(i + 2, h)):
                for x in range(max(j - 1, 0), min(j + 2, w)):
                    r = 0.0
                    for c in range(3):
                        r = max(r, abs(cells[i, j, c] - fitted[y, x, c]))
                    best = min(best, r)
                    best_hue = min(best_hue, max(abs(rg - gain * (region[y, x, 0] - region[y, x, 1])),
                                                 abs(gb - gain * (region[y, x, 1] - region[y, x, 2]))))
            colour += best <= tolerance
            hue += best_hue <= tolerance
    return colour / (h * w), hue / (h * w)


@numba.njit(nogil=True, cache=True)
def _steps(grey, i, j, step):
    """Which of the 4 kinds of grey step (rising / falling to the right, rising / falling downwards) of at least
    `step` pixel (i, j) starts, as bits 1, 2, 4, 8: an edge only counts as found where the sample has one of the
    same orientation and sign (dense letters of other words have edges of some kind everywhere within 1 px)."""
    h, w = grey.shape
    bits = 0
    if j + 1 < w:
        d = grey[i, j + 1] - grey[i, j]
        bits |= (d >= step) * 1 | (d <= -step) * 2
    if i + 1 < h:
        d = grey[i + 1, j] - grey[i, j]
        bits |= (d >= step) * 4 | (d <= -step) * 8
    return bits


@numba.njit(nogil=True, cache=True)
def _edge_score(cells, region, strong_step, found_step, min_edges, axis=GREY):
    """(overall, worst ninth, strong steps): shares of the eval region's strong steps (of `strong_step`) that
    the sample has (of `found_step`): 1 in place; 1/2 one pixel across the edge (left or right for steps along
    a row, up or down for steps along a column: a sharp step in the sample is spread over two thumbnail pixels
    when it falls inside one; along the edge nothing moves), 0 otherwise. The second share is the lowest over
    the 3x3 ninths of the region holding `min_edges` strong steps or more (1.0 when none does). Steps are
    of the pixels' projection on `axis` (RGB weights summing to 1 in absolute value): grey by default."""
    h, w = cells.shape[:2]
    grey_s, grey_e = np.empty((h, w), np.float32), np.empty((h, w), np.float32)
    for i in range(h):
        for j in range(w):
            grey_s[i, j] = axis[0] * cells[i, j, 0] + axis[1] * cells[i, j, 1] + axis[2] * cells[i, j, 2]
            grey_e[i, j] = axis[0] * region[i, j, 0] + axis[1] * region[i, j, 1] + axis[2] * region[i, j, 2]
    totals, scores = np.zeros(9, np.int64), np.zeros(9)
    for i in range(h):
        for j in range(w):
            strong = _steps(grey_e, i, j, strong_step)
            block = (3 * i // h) * 3 + 3 * j // w
            for k in range(4):
                bit = 1 << k
                if not strong & bit:
                    continue
                totals[block] += 1
                if _steps(grey_s, i, j, found_step) & bit:
                    scores[block] += 1.0
                    continue
                # across: columns j-1, j+1 for steps along a row (bits 1, 2), rows i-1, i+1 for the others
                di, dj = (0, 1) if k < 2 else (1, 0)
                for sign in (-1, 1):
                    y, x = i + sign * di, j + sign * dj
                    if 0 <= y < h and 0 <= x < w and _steps(grey_s, y, x, found_step) & bit:
                        scores[block] += 0.5
                        break
    worst = 1.0
    for b in range(9):
        if totals[b] >= min_edges:
            worst = min(worst, scores[b] / totals[b])
    return scores.sum() / max(totals.sum(), 1), worst, totals.sum()


@numba.njit(nogil=True, cache=True)
def _fit(cells, region, low, high):
    """(gain, offset) fitting the sample as gain * eval + offset on its unsaturated values (a brightened white
    background stays 255), refitted without the worst quarter (overlay text), the gain clamped to low..high."""
    s, e = cells.reshape(-1, 3), region.reshape(-1, 3)
    n = s.shape[0]
    use = np.empty(n, np.bool_)
    for i in range(n):
        use[i] = True
        for c in range(3):
            if not (4 < s[i, c] < 251):
                use[i] = False
    if use.sum() < 0.1 * n:
        use[:] = True
    a, b = 1.0, 0.0
    residual = np.empty(n)
    for _ in range(2):
        m, es_sum, ss_sum = 0, 0.0, 0.0
        for i in range(n):
            if use[i]:
                for c in range(3):
                    es_sum += e[i, c]
                    ss_sum += s[i, c]
                m += 3
        es_mean, ss_mean = es_sum / m, ss_sum / m
        var, cov = 0.0, 0.0
        for i in range(n):
            if use[i]:
                for c in range(3):
                    var += (e[i, c] - es_mean) ** 2
                    cov += (e[i, c] - es_mean) * (s[i, c] - ss_mean)
        var, cov = var / m, cov / m
        if var > 25.0:
            a = min(max(cov / var, low), high)
        b = ss_mean - a * es_mean
        for i in range(n):
            r = 0.0
            for c in range(3):
                r = max(r, abs(s[i, c] - min(max(a * e[i, c] + b, 0.0), 255.0)))
            residual[i] = r
        used = np.sort(residual[use])
        position = 0.75 * (len(used) - 1)  # numpy's default (linear) quantile
        lo = int(position)
        q = used[lo] + (position - lo) * (used[min(lo + 1, len(used) - 1)] - used[lo])
        for i in range(n):
            use[i] = use[i] and residual[i] <= q
    return a, b


def _step_pixels(grey: np.ndarray, step: float) -> np.ndarray:
    """(h, w) bool: the pixels on either side of a grey step of at least `step` to a 4-neighbour."""
    out = np.zeros(grey.shape, dtype=bool)
    across, down = np.abs(np.diff(grey, axis=1)) >= step, np.abs(np.diff(grey, axis=0)) >= step
    out[:, :-1] |= across
    out[:, 1:] |= across
    out[:-1] |= down
    out[1:] |= down
    return out


def lost_to_plain(cells: np.ndarray, region: np.ndarray, found_step: float) -> int:
    """How many of the eval region's strong-edge pixels (EDGE_STEP) have no step of `found_step` in the sample
    within 1 px, of any orientation, BORDER_RING px or more inside the region: a detail the sample lacks.

    A copy keeps its details (softened by JPEG and resampling, not flattened); overlay text hides some under its
    own letters, which have edges of their own; a look-alike lacks the eval image's dot, eyes, hand or
    mouth where the sample is plain (a star of David without its centre dot: 93 such pixels; copies: at most
    6 for 99% of them, bench/RESULTS.md "Details lost to plain")."""
    strong = _step_pixels(region.mean(axis=2), EDGE_STEP)
    h, w = strong.shape
    has = np.pad(_step_pixels(cells.mean(axis=2), found_step), 1)
    near = np.zeros_like(strong)
    for dy in range(3):
        for dx in range(3):
            near |= has[dy:dy + h, dx:dx + w]
    lost = strong & ~near
    return int(lost[BORDER_RING:h - BORDER_RING, BORDER_RING:w - BORDER_RING].sum())


def agreement(cells: np.ndarray, region: np.ndarray, tolerance: float = PIXEL_TOLERANCE) -> tuple[float, float]:
    """(pixels, edges) of a sample against the aligned eval region, both (h, w, 3) on the same cells.

    `pixels` is the lower of the shares agreeing in colour and in hue (`_agreeing`): one gain and offset can
    map a flat colour onto another (a pink field onto a brown one within 32 on every channel), not their hue.

    The gain and offset are fitted on the sample's unsaturated values, refitted without the worst quarter and
    the gain clamped to GAINS (`_fit`); the fitted eval pixels are clipped as the sample's were. An eval edge
    counts 1 when the sample has it in place, 1/2 when 1 px across (a sharp step falls between two thumbnail
    pixels), 0 otherwise: in place alone fails copies whose stripe edge the thumbnail blurred over two pixels;
    1 px alone passes dense letters of other words. The sample needs half the step (JPEG and resampling soften
    it), scaled by the gain: a low gain must not hide the region's own edges (it would pass vacuously).

    `edges` is the lower of the region's edge share and BLOCK_EDGE_SCALE times its worst ninth's: a copy loses
    edges evenly (blur, JPEG, resampling), a look-alike where it differs (other eyes in the same face, snow for
    rain under the same cloud: 83% of the face's edges found, 0-40% around the eyes). A region with too few
    strong edges to test is tested on its weaker steps along its main colour axis (WEAK_EDGE_STEP,
    `main_colour_axis`: faint letters are details too); with too few of those it counts 1.0 when its colours vary
    (a smooth photo) and 0.0 when it is a plain field: a plain square of a banner's colour is no evidence of a
    copy of that banner (bench/RESULTS.md, "Local edges"). Finally, eval details missing where the sample is plain
    (`lost_to_plain`, MAX_LOST_TO_PLAIN or more) set `edges` to 0.
    """
    cells, region = np.ascontiguousarray(cells, np.float32), np.ascontiguousarray(region, np.float32)
    a, b = _fit(cells, region, *GAINS)
    fitted = np.clip(a * region + b, 0, 255).astype(np.float32)
    overall, worst, strong = _edge_score(cells, region, EDGE_STEP, a * EDGE_STEP / 2, MIN_EDGE_PIXELS)
    if strong < MIN_EDGE_PIXELS:  # faint letters or shapes, or of another hue at the same grey
        overall, worst, strong = _edge_score(cells, region, WEAK_EDGE_STEP, a * WEAK_EDGE_STEP / 3, MIN_EDGE_PIXELS,
                                             main_colour_axis(region).astype(np.float32))
    if strong < MIN_EDGE_PIXELS:  # too few edges to test: a smooth photo passes, a plain field fails
        overall = float(region.reshape(-1, 3).std(axis=0).max() >= PLAIN_STD)
    colour, hue = _agreeing(cells, fitted, tolerance, region, a)
    edges = min(overall, BLOCK_EDGE_SCALE * worst)
    if lost_to_plain(cells, region, a * EDGE_STEP / 2) >= MAX_LOST_TO_PLAIN:
        edges = 0.0  # a detail of the eval image is missing where the sample is plain
    return min(colour, hue), edges


def measure(sample: list, thumb: np.ndarray, aspect: float, min_colour: float) -> tuple[float, float, float]:
    """(colour, pixels, edges) of a candidate pair; pixels and edges are -1 when colour < min_colour (not
    computed: most candidates stop at the cheap compiled alignment)."""
    colour, *found = align(sample, thumb, aspect)
    if colour < min_colour:
        return colour, -1.0, -1.0
    return (colour, *agreement(*refine(sample, thumb, *found)))


# ---- pre-filter ------------------------------------------------------------------------------------------
# Against an eval set of flat graphics, pHash retrieval hands a sample hundreds of candidate items (icon pHashes
# crowd: ~1,200 codes of a 5,000-icon index lie within 12 bits of a lookup), and the alignment above costs
# ~0.4 ms per item and reading. The index therefore keeps a small signature per item: the 8x8 colour grid of a
# few regions (the whole picture, its four 90% corners and 90% centre, and the square centre of each), so one
# matrix product scores every candidate against the sample. A region of a 95% crop, or of a crop keeping any
# share between, lies within 5% of a side (0.4 cell) of one of them. Only candidates scoring PREFILTER or more
# are aligned, at most MAX_VERIFIED per sample, best first (bench/RESULTS.md, "Pre-filter").
SIGNATURE_SIDE = 8
SIGNATURE_BASES = ((1.0, 0.5, 0.5), (0.9, 0.0, 0.0), (0.9, 1.0, 0.0), (0.9, 0.0, 1.0), (0.9, 1.0, 1.0),
                   (0.9, 0.5, 0.5))  # (share of each side kept, anchor x, anchor y)
SIGNATURE_BOXES = 2 * len(SIGNATURE_BASES)  # each region, then its square centre
SIGNATURE_DIM = SIGNATURE_SIDE * SIGNATURE_SIDE * 3
PREFILTER = 0.8
MAX_VERIFIED = 16


def signature_boxes(aspect: float) -> np.ndarray:
    """(SIGNATURE_BOXES, 4) regions (x0, x1, y0, y1) in 0..1 of an image of width/height `aspect`: the bases,
    then the square centre of each (the base itself for a square image)."""
    bases, squares = [], []
    for keep, ax, ay in SIGNATURE_BASES:
        x0, y0 = (1 - keep) * ax, (1 - keep) * ay
        bases.append((x0, x0 + keep, y0, y0 + keep))
        side = keep * min(aspect, 1.0)  # of the image's height; the square's width is side / aspect
        cx, cy = x0 + keep / 2, y0 + keep / 2
        squares.append((cx - side / aspect / 2, cx + side / aspect / 2, cy - side / 2, cy + side / 2))
    return np.array(bases + squares, dtype=np.float64)


def signatures(thumb: np.ndarray, aspect: float) -> np.ndarray:
    """(SIGNATURE_BOXES, SIGNATURE_DIM) int8: each region's 8x8 colour grid as a unit vector (one mean removed,
    as the alignment's), scaled so its largest entry is +-127."""
    h, w = thumb.shape[:2]
    image = np.ascontiguousarray(thumb, dtype=np.float32)
    grids = np.stack([_resample(image, *_taps(y0, y1, SIGNATURE_SIDE, h), *_taps(x0, x1, SIGNATURE_SIDE, w))
                      for x0, x1, y0, y1 in signature_boxes(aspect)])
    unit = _normalise(grids)
    return np.round(unit * (127 / np.maximum(np.abs(unit).max(axis=1, keepdims=True), 1e-6))).astype(np.int8)


def sample_signature(sample: list) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (2 * readings, SIGNATURE_DIM), aspect of each): every reading's 8x8 grid as is and mirrored."""
    grids, aspects = [], []
    for _, aspect, fine, _ in sample:
        grid = _block_mean(fine, SIGNATURE_SIDE)
        grids += [grid, grid[:, ::-1]]
        aspects += [aspect, aspect]
    return _normalise(np.stack(grids)), np.array(aspects, dtype=np.float64)


def prefilter(signature: tuple[np.ndarray, np.ndarray], item_signatures: np.ndarray,
              item_aspects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, readings), both (items,): each candidate item's pre-filter score, the best correlation of the
    sample's 8x8 grids with the item's regions of the sample's shape (as `_fitting_boxes` chooses them; all
    when none fits), and the reading of the sample that scored it (the only one the alignment then tries)."""
    vectors, sample_aspects = signature
    stored = np.asarray(item_signatures, dtype=np.float32)  # (items, boxes, dim)
    norms = np.sqrt(np.einsum("ibd,ibd->ib", stored, stored))
    scores = (stored @ vectors.T) / np.maximum(norms, 1e-6)[:, :, None]  # (items, boxes, vectors)
    shapes = np.empty((len(stored), SIGNATURE_BOXES))
    shapes[:, :len(SIGNATURE_BASES)] = np.clip(np.asarray(item_aspects, dtype=np.float64), 0.2, 5.0)[:, None]
    shapes[:, len(SIGNATURE_BASES):] = 1.0
    fits = _shape_fits(shapes[:, :, None], sample_aspects[None, None, :])
    fits |= ~fits.any(axis=1, keepdims=True)  # no region of the sample's shape: try them all
    best = np.where(fits, scores, -1.0).max(axis=1)  # (items, vectors)
    return best.max(axis=1), best.argmax(axis=1) // 2


def verify(sample: list, thumb: np.ndarray, aspect: float, min_colour: float, min_pixels: float,
           min_edges: float) -> tuple[bool, float]:
    """(accepted, score) of a candidate pair: accepted when its aligned colours correlate at min_colour or
    more AND at least min_pixels of its pixels agree AND its edge score (the eval region's strong edges found)
    reaches min_edges. The score is the lower of the two shares (the colour score when it stopped there)."""
    colour, pixels, edges = measure(sample, thumb, aspect, min_colour)
    if pixels < 0:
        return False, colour
    return pixels >= min_pixels and edges >= min_edges, min(pixels, edges)
