"""Decode, check, resize and encode one downloaded image: bytes in, a training-ready image (or a reason) out.

`process_image` is the whole step. It is pure, CPU-bound and thread-safe (Pillow releases the GIL while
decoding, resizing and encoding), so the shard writer runs it next to the fetcher: in sample processes
(pipeline/sample_processes.py, local runs) or a thread pool.

Speed: a JPEG is decoded at a reduced scale with `draft()` (libjpeg's DCT scaling: 1/2, 1/4, 1/8) whenever the
target is smaller, which skips most of the decode work; then the image is resized ONCE, straight to its final
size (center crops are cut by that same resize, through its `box`). Orientation and padding touch only the
small result.

Resize modes and encodings follow img2dataset, so its users get the images they expect:
- no: keep the size;  keep_ratio: shortest side -> image_size;  keep_ratio_largest: longest side -> image_size;
- center_crop: shortest side -> image_size, then the centered image_size square;
- border: longest side -> image_size, then padded with white to an image_size square.
Unlike img2dataset we apply the EXIF orientation (phone photos come out upright) and reject truncated files
instead of keeping their grey remainder.
"""

import io
import os
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from openwit.errors import InputError

RESIZE_MODES = ("no", "border", "center_crop", "keep_ratio", "keep_ratio_largest")
ENCODE_FORMATS = ("jpg", "webp", "png")

REASONS = {
    "not_an_image": "the bytes are not in an image format we decode (JPEG, PNG, GIF, WebP, BMP, AVIF)",
    "decode_error": "an image format, but truncated or corrupt",
    "too_many_pixels": "width x height above max_pixels (decompression-bomb guard), checked before decoding",
    "side_too_large": "one side longer than max_side pixels",
    "too_small": "the smaller original side is below min_image_size",
    "bad_aspect_ratio": "longer side / shorter side above max_aspect_ratio",
    "output_too_large": "resized, a side would exceed what the output format stores (JPEG 65,500, WebP 16,383 px)",
    "decoder_crashed": "the sample process making it died (a crash in a decoder, the memory killer): "
                       "pipeline/sample_processes.py",
}
# The longest side each output format can store (libjpeg's JPEG_MAX_DIMENSION, WebP's 14-bit sizes).
MAX_OUTPUT_SIDE = {"jpg": 65500, "webp": 16383, "png": 2**31 - 1}

# Only these decoders are ever run on downloaded bytes: common web formats with well-exercised decoders.
# Pillow would otherwise also try EPS (which runs Ghostscript), PSD, TIFF and dozens of rare formats.
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "AVIF")

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose does).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_WHITE = (255, 255, 255)

# img2dataset's interpolation names -> Pillow filters. Pillow widens the filter support by the scale factor
# when shrinking, so every filter here antialiases; "area" (a box filter) is OpenCV's INTER_AREA.
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST, "linear": Image.Resampling.BILINEAR,
    "bilinear": Image.Resampling.BILINEAR, "cubic": Image.Resampling.BICUBIC,
    "bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX, "lanczos": Image.Resampling.LANCZOS,
    "lanczos4": Image.Resampling.LANCZOS,
}


def sniff_format(head: bytes) -> str | None:
    """The image format named by the first bytes (magic numbers), or None. Content-Type is never trusted."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM":
        return "BMP"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "AVIF"
    return None


SNIFF_BYTES = 12  # sniff_format needs at most this many leading bytes


@dataclass(frozen=True)
class ImageOptions:
    image_size: int = 256
    resize_mode: str = "border"
    encode_format: str = "jpg"
    encode_quality: int = 95            # jpg/webp: 0-100; png: zlib compression level 0-9 (as img2dataset)
    min_image_size: int = 0             # reject if the smaller original side is below
    max_aspect_ratio: float = float("inf")
    max_pixels: int = 89_478_485        # decompression-bomb cap (Pillow's default)
    max_side: int = 30_000              # reject absurd dimensions even when the pixel count is small
    resize_only_if_bigger: bool = False  # as img2dataset: never upscale
    # As img2dataset. "area" for shrinking is also the fastest: after draft() the remaining factor is
    # under 2 for most JPEGs, where averaging the covered pixels is all the antialiasing needed.
    downscale_interpolation: str = "area"
    upscale_interpolation: str = "lanczos"

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES:
            raise InputError(f"resize mode {self.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
        if self.encode_format not in ENCODE_FORMATS:
            raise InputError(f"encode format {self.encode_format!r} is not one of {', '.join(ENCODE_FORMATS)}")
        if self.image_size < 1:
            raise InputError(f"image size must be a positive number of pixels, got {self.image_size}")
        if self.encode_format == "png" and not 0 <= self.encode_quality <= 9:
            raise InputError(f"for png the encode quality is the compression level 0-9, got "
                             f"{self.encode_quality}; pass e.g. --encode-quality 6")
        if self.encode_format != "png" and not 0 <= self.encode_quality <= 100:
            raise InputError(f"encode quality must be 0-100 for {self.encode_format}, got {self.encode_quality}")
        for name in (self.downscale_interpolation, self.upscale_interpolation):
            if name not in INTERPOLATIONS:
                raise InputError(f"interpolation {name!r} is not one of {', '.join(INTERPOLATIONS)}")
        if self.max_aspect_ratio < 1:
            raise InputError(f"max aspect ratio is longer/shorter side, so at least 1; got {self.max_aspect_ratio}")


@dataclass
class ProcessedImage:
    data: bytes            # encoded output
    ext: str               # "jpg" | "webp" | "png" (WebDataset extension)
    width: int
    height: int
    original_width: int    # upright (after EXIF orientation), as decoded from the file
    original_height: int
    image: Image.Image     # the final RGB image (perceptual hashes, eval-set dedup)


class ImageRejected(Exception):
    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason


def process_image(data: bytes, options: ImageOptions) -> ProcessedImage:
    """Decode `data`, check it against the options, resize it once, encode it. Raises ImageRejected only."""
    img = _open(data)
    stored_w, stored_h = img.size
    if stored_w * stored_h > options.max_pixels:
        raise ImageRejected("too_many_pixels", f"{stored_w}x{stored_h} is above {options.max_pixels} pixels")
    if max(stored_w, stored_h) > options.max_side:
        raise ImageRejected("side_too_large", f"{stored_w}x{stored_h} has a side above {options.max_side}")
    if min(stored_w, stored_h) < 1:
        raise ImageRejected("decode_error", f"declared size {stored_w}x{stored_h}")

    transpose = _UPRIGHT.get(_orientation(img))
    swaps = transpose in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE,
                          Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270)
    width, height = (stored_h, stored_w) if swaps else (stored_w, stored_h)  # upright size

    if min(width, height) < options.min_image_size:
        raise ImageRejected("too_small", f"{width}x{height} has a side below {options.min_image_size}")
    if max(width, height) / min(width, height) > options.max_aspect_ratio:
        raise ImageRejected("bad_aspect_ratio",
                            f"{width}x{height} is more elongated than {options.max_aspect_ratio}:1")

    # Plan the single resize in the stored orientation: the output size, and the source box it reads.
    scaled, crop = _plan(stored_w, stored_h, options)
    largest = MAX_OUTPUT_SIDE[options.encode_format]
    if max(scaled or (stored_w, stored_h)) > largest:
        raise ImageRejected("output_too_large", f"{width}x{height} resized has a side above {largest} px, the "
                                                f"most {options.encode_format} stores")
    if scaled is not None and img.format in ("JPEG", "MPO"):
        # Ask libjpeg for the smallest DCT scale that still covers the part we keep, at full scale.
        need_w, need_h = scaled if crop is None else (scaled[0] * stored_w // (crop[2] - crop[0]),
                                                      scaled[1] * stored_h // (crop[3] - crop[1]))
        img.draft("RGB", (need_w, need_h))
    try:
        img.load()
        rgb = _to_rgb(img)
    except Exception as e:  # Pillow's decoders raise many types on hostile files; each is one bad image
        raise ImageRejected("decode_error", f"cannot decode the {img.format} image: {type(e).__name__}: {e}") from None

    if scaled is not None:
        # draft() may have shrunk the image: express the crop box in the decoded image's pixels.
        fx, fy = rgb.width / stored_w, rgb.height / stored_h
        box = None if crop is None else (crop[0] * fx, crop[1] * fy, crop[2] * fx, crop[3] * fy)
        if scaled != rgb.size or box is not None:
            src_w, src_h = (rgb.width, rgb.height) if box is None else (box[2] - box[0], box[3] - box[1])
            enlarging = scaled[0] > src_w or scaled[1] > src_h
            resample = INTERPOLATIONS[options.upscale_interpolation if enlarging else options.downscale_interpolation]
            rgb = rgb.resize(scaled, resample, box=box, reducing_gap=None)
    if transpose is not None:
        rgb = rgb.transpose(transpose)
    if options.resize_mode == "border" and scaled is not None and rgb.size != (options.image_size,) * 2:
        canvas = Image.new("RGB", (options.image_size, options.image_size), _WHITE)
        canvas.paste(rgb, ((options.image_size - rgb.width) // 2, (options.image_size - rgb.height) // 2))
        rgb = canvas

    return ProcessedImage(data=_encode(rgb, options), ext=options.encode_format, width=rgb.width,
                          height=rgb.height, original_width=width, original_height=height, image=rgb)


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=DECODABLE_FORMATS)
    except UnidentifiedImageError:
        head = data[:SNIFF_BYTES]
        if sniff_format(head) is None:
            raise ImageRejected("not_an_image", f"unknown format, starts with {head!r}") from None
        raise ImageRejected("decode_error", f"{sniff_format(head)} header is corrupt") from None
    except Image.DecompressionBombError as e:
        raise ImageRejected("too_many_pixels", str(e)) from None
    except Exception as e:  # OSError, SyntaxError, struct.error...: a header Pillow cannot parse
        raise ImageRejected("decode_error", f"cannot read the image header: {type(e).__name__}: {e}") from None


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block is no reason to lose the picture: treat it as upright
        return 1


def _plan(w: int, h: int, options: ImageOptions) -> tuple[tuple[int, int] | None, tuple[int, int, int, int] | None]:
    """(output size of the resize or None for no resize, source crop box or None) in stored orientation.

    The center crop is symmetric, so planning it before the EXIF rotation gives the same picture.
    """
    size = options.image_size
    mode = options.resize_mode
    if mode == "no":
        return None, None
    if mode in ("keep_ratio", "center_crop"):
        side = min(w, h)
    else:  # border, keep_ratio_largest
        side = max(w, h)
    if options.resize_only_if_bigger and side <= size:
        return None, None
    if mode == "center_crop":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        return (size, size), (left, top, left + s, top + s)
    scale = size / side
    return (max(1, round(w * scale)), max(1, round(h * scale))), None


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparency composited on white (a transparent logo on black would lose its shapes)."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):  # 16-bit PNG: keep the high byte rather than clipping at 255
        img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8), "L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if not has_alpha:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, _WHITE)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


_scratch = threading.local()  # each decode thread's encode file (see _encode_file)


def _encode_file():
    """This thread's in-memory file to encode into, or None where the OS has no memfd (then a BytesIO).

    Why a file: Pillow encodes into a real file descriptor with the GIL released (ImageFile._save ->
    encode_to_file), but into a BytesIO chunk by chunk with the GIL held, ~0.2 ms per 256 px JPEG during which
    the other decode threads and the fetch loop wait. The bytes are the same either way.

    A forked process gets its own: the parent's file is shared with it (one offset, one content), and two
    processes encoding into it at once wrote each other's bytes (a multiprocessing pool after a first encode)."""
    f = getattr(_scratch, "file", False)
    if f is False or _scratch.pid != os.getpid():
        if f:
            f.close()  # the parent's, inherited: this process's copy of the descriptor only
        try:
            f = open(os.memfd_create("openwit-encode", os.MFD_CLOEXEC), "w+b", buffering=0)
        except (AttributeError, OSError):  # no memfd here (not Linux, a sandbox, out of descriptors)
            f = None
        _scratch.file, _scratch.pid = f, os.getpid()
    return f


def _encode(img: Image.Image, options: ImageOptions) -> bytes:
    f = _encode_file()
    out = io.BytesIO() if f is None else f
    out.seek(0)  # the thread's file holds the previous image: overwrite it from the start
    if options.encode_format == "jpg":
        img.save(out, "JPEG", quality=options.encode_quality)
    elif options.encode_format == "webp":
        img.save(out, "WEBP", quality=options.encode_quality)
    else:
        img.save(out, "PNG", compress_level=options.encode_quality)
    if f is None:
        return out.getvalue()
    return os.pread(f.fileno(), f.tell(), 0)
