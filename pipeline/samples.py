"""One sample: a fetched candidate -> its shard parquet row and the files it adds to the tar.

Decode, check, resize, encode (pipeline/resize.py), pHash of the written file, and the eval-set lookup. Plain
Python without Beam: the shard writer (pipeline/write_shards.py) runs it in its decode threads, or in sample
processes (pipeline/sample_processes.py), which import this module and not Beam.
"""

import hashlib
import io
import json
import logging

from PIL import Image

from dedup import image_hashes
from pipeline import resize

EVAL_DUPLICATE = "eval_duplicate"
INTERNAL_ERROR = "internal_error"  # a bug met while processing one sample: logged, counted, never fatal
ERROR_DETAIL_MAX_CHARS = 500  # a server's error text can be anything; the parquet keeps its start


# pHash is read from a JPEG decoded at a reduced scale, no smaller than this a side: twice imagehash's 32 px
# thumbnail, so its Lanczos filter still averages real pixels (see phash_of_written).
PHASH_DRAFT_SIDE = 64


def phash_of_written(data: bytes) -> str:
    """imagehash's pHash (hex) of an encoded image, as written to the tar.

    A JPEG is decoded grey at the smallest 1/2, 1/4 or 1/8 scale that keeps each side >= PHASH_DRAFT_SIDE
    (`draft()`: libjpeg returns the luma channel straight from its scaled IDCT; no chroma, no colour
    conversion), then hashed exactly as imagehash.phash hashes. For a 256 px JPEG that is 2-3x cheaper than
    imagehash.phash of the full decode, and the same hash for ~80% of images: its thumbnail differs by a grey
    level here and there, which flips DCT coefficients that sit at the median. Measured by bench/bench_phash.py
    (bench/RESULTS.md): crops of real photos 78% identical, 96% within 2 bits, 99% within 6; rendered icons
    (flat colours, sharp edges, where pHash is touchy anyway) 80% identical, 91% within 2 bits, the rest up to
    26 bits. Other formats (webp, png) are decoded in full: the same hash as imagehash.phash of the file.
    """
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        image.draft("L", (PHASH_DRAFT_SIDE, PHASH_DRAFT_SIDE))
    # imagehash.phash from here on, bit for bit (dedup/image_hashes.py).
    return f"{image_hashes.hash_thumbnail(image_hashes.thumbnail(image.convert('L'))):016x}"


def phash_of_written_jpeg(data: bytes, size: tuple[int, int]) -> str:
    """phash_of_written of a colour JPEG that resize.process_image encoded, whose size is known: the same
    decode (libjpeg's luma at the same DCT scale, what Image.open + draft("L") + load ask of it), without
    Pillow's Python parsing of the file's headers (its quantization tables are read value by value, ~0.1 ms
    a file with the GIL held). Any surprise falls back to phash_of_written."""
    w, h = size
    scale = min(w // PHASH_DRAFT_SIDE, h // PHASH_DRAFT_SIDE)
    s = next((s for s in (8, 4, 2) if scale >= s), 1)  # JpegImageFile.draft's choice
    luma = Image.new("L", ((w + s - 1) // s, (h + s - 1) // s))
    try:
        decoder = Image._getdecoder("L", "jpeg", ("L", ""), (s, 0))  # Pillow's own (private) decoder factory
    except Exception:  # a Pillow without it: the slow path gives the same hash
        return phash_of_written(data)
    try:
        decoder.setimage(luma.im, (0, 0, *luma.size))
        consumed, error = decoder.decode(data)
    finally:
        decoder.cleanup()
    if consumed >= 0 or error < 0:  # wanted more bytes, or failed: not the file we wrote
        return phash_of_written(data)
    return f"{image_hashes.hash_thumbnail(image_hashes.thumbnail(luma)):016x}"


def _detail(text: str | None) -> str | None:
    return None if text is None else text[:ERROR_DETAIL_MAX_CHARS]


def failed_row(candidate: dict, reason: str | None, detail: str | None = None) -> dict:
    return {
        "key": candidate["key"], "url": candidate["url"], "caption": candidate["caption"],
        "status": "failed", "error_message": reason, "http_status": None, "error_detail": _detail(detail),
        "width": None, "height": None,
        "original_width": None, "original_height": None, "sha256": None, "phash": None,
        "queries": candidate["queries"], "page_url": candidate.get("page_url") or "", "eval_matches": [],
    }


class SampleMaker:
    """Turns fetched candidates into samples; holds what that needs for a worker's lifetime (the eval index)."""

    def __init__(self, image: resize.ImageOptions, eval_index: str | None = None, decontaminate: str = "drop"):
        self.image, self.decontaminate = image, decontaminate
        self.eval_index = None
        if eval_index:
            from dedup.eval_index import EvalIndex

            self.eval_index = EvalIndex.load(eval_index)

    def sample(self, candidate: dict, result) -> tuple[dict, list]:
        """The shard parquet row of one candidate, and the files it contributes to the tar (none if failed).
        `result` is its pipeline.fetch.FetchResult."""
        try:
            return self._make(candidate, result)
        except Exception as e:  # one sample must never take down a shard of 10k: log it, count it, go on
            logging.exception("unexpected error processing %s (counted as %s)", candidate["url"], INTERNAL_ERROR)
            return failed_row(candidate, INTERNAL_ERROR, f"{type(e).__name__}: {e}"), []

    def _make(self, candidate: dict, result) -> tuple[dict, list]:
        row = failed_row(candidate, result.reason, result.error_message)
        row["http_status"] = result.http_status
        if result.reason is not None:
            return row, []
        row["sha256"] = hashlib.sha256(result.body).hexdigest()
        try:
            image = resize.process_image(result.body, self.image)
        except resize.ImageRejected as e:
            row["error_message"], row["error_detail"] = e.reason, _detail(str(e))
            return row, []
        # Hash and verify what is written, not the in-memory image: encoding (JPEG q95 by default) changes
        # pixels, and a user checking a shard against an eval set hashes the file.
        row.update(width=image.width, height=image.height, original_width=image.original_width,
                   original_height=image.original_height,
                   phash=phash_of_written_jpeg(image.data, (image.width, image.height)) if image.ext == "jpg"
                   else phash_of_written(image.data))
        if self.eval_index is not None:
            written = Image.open(io.BytesIO(image.data)).convert("RGB")
            matches = self.eval_index.lookup(written, candidate["caption"])
            row["eval_matches"] = [
                {"eval_set": m.eval_set, "eval_id": m.eval_id, "method": m.method, "distance": float(m.distance),
                 "verification": m.verification, "score": float(m.score)}
                for m in matches
            ]
            if matches and self.decontaminate == "drop":
                row["error_message"] = EVAL_DUPLICATE
                return row, []
        row["status"], row["error_message"] = "success", None
        meta = {k: row[k] for k in ("key", "url", "caption", "width", "height", "original_width",
                                    "original_height", "sha256", "phash", "queries", "page_url")}
        files = [(image.ext, image.data), ("txt", row["caption"].encode()),
                 ("json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode())]
        return row, files
