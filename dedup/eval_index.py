"""The eval index: one file holding every eval set's signals, and the lookup the pipeline runs per sample.

A sample overlaps an eval item when
- its decoded pixels are byte-identical ("sha256", distance 0);
- its pHash is within `radius` bits of the pHash of the eval image or of a stored variant ("phash",
  "mirror_phash", "crop_phash"; see dedup/image_hashes.py), the item is among the verify.MAX_VERIFIED best of
  the sample's candidates by the pre-filter (scoring verify.PREFILTER or more) AND the pair passes verification
  on pixels (dedup/verify.py): aligned on the eval image's stored 64 px thumbnail, its colours correlate at
  `min_colour` or more, at least `min_pixels` of its pixels agree in colour and hue and `min_edges` of the
  region's strong edges are found (and half that share in every ninth of the region, and no detail of it is
  missing where the sample is plain). The hash only retrieves candidates; flat graphics collide there by the
  thousand;
- its caption is within `caption_max_distance` (1 - Jaccard of word bigrams) of one of the item's
  captions ("caption_minhash"; see dedup/caption_index.py).

Built by `openwit eval-index` (dedup/build_index.py). The file is a NumPy .npz (no pickle, so loading an
index from someone else cannot run code) written through Beam's filesystems, so it may live on gs:// etc.
It is stored uncompressed, so on a local disk the thumbnails (12 KiB per item: 1.2 GB for 100k items) are
memory-mapped, not read: a lookup touches only its candidates' pages (so are the pre-filter signatures, 2.3 KiB
per item).
"""

import io
import json
import multiprocessing
import os
import struct
import zipfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from dedup import caption_index, image_hashes, verify
from dedup.caption_index import CaptionIndex
from dedup.eval_sets import EvalItem, decode
from dedup.hamming_index import HammingIndex
from openwit.errors import InputError

FORMAT = "openwit-eval-index"
VERSION = 4  # 2: thumbnails and aspect ratios for verification; 3: 64 px thumbnails in their aspect ratio;
# 4: pre-filter signatures
# Largest pHash distance retrieved as a candidate, and the verification's thresholds (dedup/verify.py);
# chosen from the measured recall / false-positive curves in bench/RESULTS.md ("Verification at 64 px";
# radius 16 since "Local edges, hue": overlay text moves a flat graphic's pHash 13-16 bits).
DEFAULT_RADIUS = 16
DEFAULT_MIN_COLOUR = 0.9
DEFAULT_MIN_PIXELS = 0.9
DEFAULT_MIN_EDGES = 0.8
METHODS = ("sha256", "phash", "mirror_phash", "crop_phash", "caption_minhash")
# How each method's matches are confirmed, recorded beside the method: pixel hashes need no second test,
# caption matches are confirmed by exact Jaccard (their score is 1 - distance), image hashes by dedup/verify.
VERIFICATION = {"sha256": "identical_pixels", "caption_minhash": "jaccard"}
# Below this side (px) a thumbnail has no structure to compare, and pHash none to hash.
MIN_HASH_SIDE = 16


@dataclass(frozen=True)
class OverlapMatch:
    eval_set: str  # name given at build time
    eval_id: str  # stable id of the eval item
    method: str  # one of METHODS
    distance: float  # Hamming distance (hashes) or 1-Jaccard (captions); 0 for exact
    verification: str = ""  # how the candidate was confirmed: verify.METHOD or VERIFICATION[method]
    score: float = 1.0  # its score: verify.verify's for hashes, 1 - distance for captions, 1 for sha256


@dataclass
class BuildReport:
    """What went into the index, per eval set: items indexed and items rejected with their reasons."""

    items: dict[str, int] = field(default_factory=dict)
    hashes: dict[str, int] = field(default_factory=dict)
    captions: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few "id: reason" per eval set
    # Items indexed by exact pixels and captions only, with no perceptual hash (too flat or tiny), by reason.
    unhashed: dict[str, dict[str, int]] = field(default_factory=dict)
    unhashed_examples: dict[str, list[str]] = field(default_factory=dict)


def image_signals(image_bytes: bytes) -> tuple[bytes, np.ndarray, np.ndarray, tuple[int, int], list[tuple[str, int]]]:
    """What the index keeps of one eval image: (pixel sha256, verification thumbnail, its pre-filter signature,
    (width, height), pHash variants; none for tiny or flat images). Raises ValueError for bytes that are not a
    usable image."""
    image = decode(image_bytes)
    variants = [] if min(image.size) < MIN_HASH_SIDE else image_hashes.eval_variants(image)
    thumb = verify.thumbnail(image)
    return (image_hashes.pixel_sha256(image), thumb, verify.signatures(thumb, image.width / image.height),
            image.size, variants)


def _signals_or_error(image_bytes: bytes | None):
    if image_bytes is None:
        return None, None
    try:
        return image_signals(image_bytes), None
    except ValueError as e:
        return None, e


# Items decoded per round. ~9 ms of CPU an item (15 min for 100k items on one core), so a large eval set is
# spread over processes; one smaller than a round never starts them (tests, the experiment's small sets).
SIGNAL_BATCH = 256


class _SignalPool:
    """A process pool for image_signals, started only when a round is full; closed on exit."""

    def __init__(self, workers: int):
        self.workers, self.executor = workers, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)

    def map(self, blobs: list[bytes | None]) -> list:
        if self.workers > 1 and len(blobs) >= SIGNAL_BATCH:
            if self.executor is None:
                # forkserver: the parent may hold threads (Beam, numba) that fork would copy half-way.
                self.executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"))
            return list(self.executor.map(_signals_or_error, blobs, chunksize=8))
        return [_signals_or_error(blob) for blob in blobs]


def _with_signals(items: Iterable[EvalItem], pool: _SignalPool):
    """(item, signals, error) for every item, in order, SIGNAL_BATCH items at a time (bounded memory)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == SIGNAL_BATCH:
            yield from _signal_round(batch, pool)
            batch = []
    yield from _signal_round(batch, pool)


def _signal_round(batch: list[EvalItem], pool: _SignalPool):
    results = pool.map([None if item.error else item.image_bytes for item in batch])
    for item, (signals, error) in zip(batch, results):
        yield item, signals, (ValueError(item.error) if item.error else error)


class EvalIndex:
    def __init__(self, eval_sets: list[str], item_set: np.ndarray, item_ids: list[str], item_sha: np.ndarray,
                 codes: np.ndarray, code_item: np.ndarray, code_method: np.ndarray,
                 captions: list[str], caption_item: np.ndarray, thumbs: np.ndarray, thumb_shapes: np.ndarray,
                 signatures: np.ndarray, aspects: np.ndarray, radius: int = DEFAULT_RADIUS,
                 caption_max_distance: float = caption_index.DEFAULT_MAX_DISTANCE,
                 min_colour: float = DEFAULT_MIN_COLOUR, min_pixels: float = DEFAULT_MIN_PIXELS,
                 min_edges: float = DEFAULT_MIN_EDGES):
        self.eval_sets = list(eval_sets)
        self.item_set = np.asarray(item_set, dtype=np.int32)
        self.item_ids = list(item_ids)
        self.item_sha = np.asarray(item_sha, dtype=np.uint8).reshape(-1, 32)
        self.codes = np.asarray(codes, dtype=np.uint64)
        self.code_item = np.asarray(code_item, dtype=np.int32)
        self.code_method = np.asarray(code_method, dtype=np.uint8)
        self.captions = list(captions)
        self.caption_item = np.asarray(caption_item, dtype=np.int32)
        # (items, THUMB_PIXELS * 3) uint8, item i's thumbnail in its first h*w*3 bytes (h, w = thumb_shapes[i]);
        # possibly a read-only memory map.
        self.thumbs = np.asanyarray(thumbs, dtype=np.uint8)
        self.thumb_shapes = np.asarray(thumb_shapes, dtype=np.int32).reshape(-1, 2)
        # (items, SIGNATURE_BOXES, SIGNATURE_DIM) int8 pre-filter signatures (verify.signatures); possibly mapped.
        self.signatures = np.asanyarray(signatures, dtype=np.int8).reshape(-1, verify.SIGNATURE_BOXES,
                                                                          verify.SIGNATURE_DIM)
        self.aspects = np.asarray(aspects, dtype=np.float32)
        self.radius = int(radius)
        self.caption_max_distance = float(caption_max_distance)
        self.min_colour = float(min_colour)
        self.min_pixels = float(min_pixels)
        self.min_edges = float(min_edges)
        self._build_lookups()

    def _build_lookups(self) -> None:
        self._hamming = HammingIndex(self.codes, radius=self.radius)
        self._sha: dict[bytes, list[int]] = {}
        for i, digest in enumerate(self.item_sha):
            self._sha.setdefault(digest.tobytes(), []).append(i)
        self._captions = (CaptionIndex(self.captions, self.caption_item.tolist(), self.caption_max_distance)
                          if self.captions else None)

    def __len__(self) -> int:
        return len(self.item_ids)

    def thumbnail(self, item: int) -> np.ndarray:
        h, w = self.thumb_shapes[item]
        return np.asarray(self.thumbs[item, :h * w * 3]).reshape(h, w, 3)

    # ---- building -------------------------------------------------------------------------------------

    @classmethod
    def build(cls, eval_sets: Iterable[tuple[str, Iterable[EvalItem]]], radius: int = DEFAULT_RADIUS,
              caption_max_distance: float = caption_index.DEFAULT_MAX_DISTANCE,
              min_colour: float = DEFAULT_MIN_COLOUR, min_pixels: float = DEFAULT_MIN_PIXELS,
              min_edges: float = DEFAULT_MIN_EDGES, workers: int = 1) -> tuple["EvalIndex", BuildReport]:
        """Hash every item of every (name, items) eval set; unreadable items are counted, not fatal, and
        items with no perceptual hash are counted apart (they still match by exact pixels and captions).

        `workers` > 1 decodes and hashes in that many processes once an eval set outgrows one batch; the
        index is the same whatever the count.
        """
        with _SignalPool(workers) as pool:
            return cls._build(eval_sets, pool, radius, caption_max_distance, min_colour, min_pixels, min_edges)

    @classmethod
    def _build(cls, eval_sets, pool, radius, caption_max_distance, min_colour, min_pixels, min_edges):
        names, item_set, item_ids, item_sha, thumbs, shapes, signatures, aspects = [], [], [], [], [], [], [], []
        codes, code_item, code_method, captions, caption_item = [], [], [], [], []
        report = BuildReport()
        for name, items in eval_sets:
            if name in names:
                raise InputError(f"eval set name {name!r} is given twice; give each --eval-set a distinct name")
            names.append(name)
            set_no = len(names) - 1
            rejected, examples = report.rejected.setdefault(name, {}), report.examples.setdefault(name, [])
            report.items[name] = report.hashes[name] = report.captions[name] = 0
            unhashed = report.unhashed.setdefault(name, {})
            unhashed_examples = report.unhashed_examples.setdefault(name, [])
            for item, signals, error in _with_signals(items, pool):
                if error is not None:
                    reason = str(error).split(":")[0] if item.error is None else "unreadable"
                    rejected[reason] = rejected.get(reason, 0) + 1
                    if len(examples) < 5:
                        examples.append(f"{item.eval_id}: {error}")
                    continue
                sha, thumb, signature, (width, height), variants = signals
                number = len(item_ids)
                item_set.append(set_no)
                item_ids.append(item.eval_id)
                item_sha.append(np.frombuffer(sha, dtype=np.uint8))
                thumbs.append(np.pad(thumb.ravel(), (0, verify.THUMB_PIXELS * 3 - thumb.size)))
                shapes.append(thumb.shape[:2])
                signatures.append(signature)
                aspects.append(width / height)
                if not variants:
                    reason = "tiny" if min(width, height) < MIN_HASH_SIDE else "flat"
                    unhashed[reason] = unhashed.get(reason, 0) + 1
                    if len(unhashed_examples) < 5:
                        unhashed_examples.append(f"{item.eval_id}: {reason} ({width}x{height})")
                for method, code in variants:
                    codes.append(code)
                    code_item.append(number)
                    code_method.append(METHODS.index(method))
                    report.hashes[name] += 1
                for caption in item.captions:
                    captions.append(caption)
                    caption_item.append(number)
                    report.captions[name] += 1
                report.items[name] += 1
        index = cls(names, np.array(item_set, dtype=np.int32), item_ids,
                    np.array(item_sha, dtype=np.uint8).reshape(-1, 32), np.array(codes, dtype=np.uint64),
                    np.array(code_item, dtype=np.int32), np.array(code_method, dtype=np.uint8),
                    captions, np.array(caption_item, dtype=np.int32),
                    np.array(thumbs, dtype=np.uint8).reshape(-1, verify.THUMB_PIXELS * 3),
                    np.array(shapes, dtype=np.int32).reshape(-1, 2),
                    np.array(signatures, dtype=np.int8).reshape(-1, verify.SIGNATURE_BOXES, verify.SIGNATURE_DIM),
                    np.array(aspects, dtype=np.float32),
                    radius, caption_max_distance, min_colour, min_pixels, min_edges)
        return index, report

    # ---- file -----------------------------------------------------------------------------------------

    def save(self, path: str) -> None:
        from apache_beam.io.filesystems import FileSystems

        meta = {"format": FORMAT, "version": VERSION, "radius": self.radius, "min_colour": self.min_colour,
                "min_pixels": self.min_pixels, "min_edges": self.min_edges,
                "caption_max_distance": self.caption_max_distance, "eval_sets": self.eval_sets,
                "methods": list(METHODS)}
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(meta)), item_set=self.item_set,
                 item_ids=np.array(self.item_ids, dtype=np.str_), item_sha=self.item_sha, codes=self.codes,
                 code_item=self.code_item, code_method=self.code_method,
                 captions=np.array(self.captions, dtype=np.str_), caption_item=self.caption_item,
                 thumbs=self.thumbs, thumb_shapes=self.thumb_shapes, signatures=self.signatures,
                 aspects=self.aspects)
        try:
            with FileSystems.create(path) as f:
                f.write(buf.getvalue())
        except Exception as e:  # each Beam filesystem raises its own error types
            raise InputError(f"cannot write eval index {path!r}: {e}. Check --output.") from e

    @classmethod
    def load(cls, path: str) -> "EvalIndex":
        local = "://" not in path and os.path.isfile(path)
        try:
            if local:
                source = path  # without Beam's import: each sample process loads the index too
            else:
                from apache_beam.io.filesystems import FileSystems

                with FileSystems.open(path, compression_type="uncompressed") as f:
                    source = io.BytesIO(f.read())
        except Exception as e:
            raise InputError(f"cannot read eval index {path!r}: {e}. Build one with `openwit eval-index`.") from e
        try:
            arrays = np.load(source, allow_pickle=False)
            meta = json.loads(str(arrays["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError("not an OpenWIT eval index")
        except Exception as e:
            raise InputError(f"{path!r} is not a readable eval index ({type(e).__name__}: {e}); "
                             "rebuild it with `openwit eval-index`") from e
        if meta.get("version") != VERSION:
            raise InputError(f"{path!r} is an eval index of format version {meta.get('version')}; this OpenWIT "
                             f"reads version {VERSION} (thumbnails and signatures that verify candidates). Re-run "
                             "`openwit eval-index` on your eval sets to rebuild it.")
        try:
            methods = meta["methods"]
            # Method codes are positions in the list saved with the file, so reordering METHODS later
            # cannot silently relabel an old index.
            code_method = np.array([METHODS.index(m) for m in methods], dtype=np.uint8)[arrays["code_method"]]
            mapped = {name: (_memory_map(path, name) if local else None) for name in ("thumbs", "signatures")}
            mapped = {name: arrays[name] if array is None else array for name, array in mapped.items()}
            index = cls(meta["eval_sets"], arrays["item_set"], arrays["item_ids"].tolist(), arrays["item_sha"],
                       arrays["codes"], arrays["code_item"], code_method, arrays["captions"].tolist(),
                       arrays["caption_item"], mapped["thumbs"], arrays["thumb_shapes"], mapped["signatures"],
                       arrays["aspects"], meta["radius"], meta["caption_max_distance"],
                       meta["min_colour"], meta["min_pixels"], meta["min_edges"])
            arrays.close()
            return index
        except Exception as e:
            raise InputError(f"{path!r} is not a readable eval index ({type(e).__name__}: {e}); "
                             "rebuild it with `openwit eval-index`") from e

    # ---- lookup ---------------------------------------------------------------------------------------

    def lookup(self, image, caption: str | None = None) -> list[OverlapMatch]:
        """Every eval item the sample overlaps, once per method with its smallest distance; sorted."""
        return self.lookup_many([image], [caption])[0]

    def lookup_many(self, images: list, captions: list[str | None] | None = None) -> list[list[OverlapMatch]]:
        """`lookup` of many samples (e.g. a shard's) at once: one compiled Hamming search for all of them."""
        captions = [None] * len(images) if captions is None else list(captions)
        if len(captions) != len(images):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        best: list[dict[tuple[int, str], tuple[float, str, float]]] = [{} for _ in images]

        def add(sample: int, item: int, method: str, distance: float, verification: str, score: float) -> None:
            if distance < best[sample].get((item, method), (float("inf"),))[0]:
                best[sample][(item, method)] = (distance, verification, score)

        # In RGB and without letterbox bars once: hashing and verification both read them (~0.25 ms a trim).
        images = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        trimmed = {}
        hashed, codes = [], []
        for sample, image in enumerate(images):
            for item in self._sha.get(image_hashes.pixel_sha256(image), ()):
                add(sample, item, "sha256", 0.0, VERIFICATION["sha256"], 1.0)
            if min(image.size) < MIN_HASH_SIDE:
                continue
            trimmed[sample] = image_hashes.trim_border(image)
            for code in image_hashes.sample_hashes(image, trimmed[sample]):
                hashed.append(sample)
                codes.append(code)
        if codes and len(self.codes):
            qpos, ids, dists = self._hamming.query_many(np.array(codes, dtype=np.uint64), self.radius)
            # Retrieval gives candidates; each (sample, item) pair is verified once, on pixels, and only
            # then are its hash matches recorded. Most samples have no candidate and cost no verification.
            samples, items = np.array(hashed)[qpos], self.code_item[ids]
            accepted = self._verified(images, trimmed, samples, items)
            for sample, item, code_id, d in zip(samples.tolist(), items.tolist(), ids.tolist(), dists.tolist()):
                if (sample, item) in accepted:
                    add(sample, item, METHODS[self.code_method[code_id]], float(d), verify.METHOD,
                        accepted[sample, item])
        if self._captions is not None:
            for sample, caption in enumerate(captions):
                if caption:
                    for item, d in self._captions.query(caption):
                        add(sample, item, "caption_minhash", d, VERIFICATION["caption_minhash"], 1.0 - d)
        return [sorted((OverlapMatch(self.eval_sets[self.item_set[item]], self.item_ids[item], method, *found_as)
                        for (item, method), found_as in found.items()),
                       key=lambda m: (m.eval_set, m.eval_id, m.method))
                for found in best]

    def _verified(self, images: list, trimmed: dict, samples: np.ndarray, items: np.ndarray
                  ) -> dict[tuple[int, int], float]:
        """{(sample, item): score} of the retrieved pairs that pass verification. Per sample, the candidate
        items are ranked by the pre-filter in one step; those below verify.PREFILTER are dropped and at most
        verify.MAX_VERIFIED of the rest are verified on pixels, best first, each on the reading of the sample
        (verify.sample_features) that the pre-filter found best."""
        accepted = {}
        if not len(samples):
            return accepted
        order = np.argsort(samples, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(samples[order]) != 0])
        for sample, pairs in zip(samples[order][starts].tolist(), np.split(order, starts[1:])):
            candidates = np.unique(items[pairs])
            features = verify.sample_features(images[sample], trimmed[sample])
            scores, readings = verify.prefilter(verify.sample_signature(features), self.signatures[candidates],
                                                self.aspects[candidates])
            best = np.argsort(-scores, kind="stable")[:verify.MAX_VERIFIED]
            best = best[scores[best] >= verify.PREFILTER]
            for item, reading in zip(candidates[best].tolist(), readings[best].tolist()):
                ok, score = verify.verify([features[reading]], self.thumbnail(item), self.aspects[item],
                                          self.min_colour, self.min_pixels, self.min_edges)
                if ok:
                    accepted[sample, item] = score
        return accepted


def _memory_map(path: str, name: str) -> np.memmap | None:
    """Array `name` of the .npz at local `path`, memory-mapped read-only (None when it is compressed).

    np.load cannot map a member of an .npz; np.savez stores members uncompressed, so the member's .npy
    bytes lie whole in the file, after its zip local header and its .npy header.
    """
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C")
