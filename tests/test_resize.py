"""process_image on real encoded images: img2dataset's resize modes, EXIF orientation, transparency, encodings,
and every kind of broken or hostile file ending in its reason from resize.REASONS."""

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from openwit.errors import InputError
from pipeline.resize import (ENCODE_FORMATS, REASONS, RESIZE_MODES, ImageOptions, ImageRejected, process_image,
                             sniff_format)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(img: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def halves(size, left=RED, right=BLUE) -> Image.Image:
    """Left half one colour, right half another: shows where crops, pads and rotations put things."""
    img = Image.new("RGB", size, left)
    img.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return img


def textured(size, seed=0) -> Image.Image:
    """A photo-like image (gradients, shapes, noise): what resampling quality is judged on."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    arr = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    arr += 40 * np.sin(x / 17.0)[..., None] + rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def close(a, b, tol=12):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def rejected(data, **options) -> str:
    with pytest.raises(ImageRejected) as e:
        process_image(data, ImageOptions(**options))
    assert e.value.reason in REASONS
    return e.value.reason


@pytest.mark.parametrize("mode, size", [("no", (400, 300)), ("border", (256, 256)), ("center_crop", (256, 256)),
                                        ("keep_ratio", (341, 256)), ("keep_ratio_largest", (256, 192))])
def test_resize_modes_give_img2dataset_sizes(mode, size):
    out = process_image(encode(halves((400, 300))), ImageOptions(resize_mode=mode))
    assert (out.width, out.height) == size == out.image.size
    assert (out.original_width, out.original_height) == (400, 300)
    assert Image.open(io.BytesIO(out.data)).size == size


def test_border_pads_with_white_and_keeps_the_whole_picture():
    out = process_image(encode(halves((400, 200))), ImageOptions(resize_mode="border", image_size=200))
    img = out.image
    assert close(img.getpixel((100, 2)), WHITE) and close(img.getpixel((100, 197)), WHITE)  # bands above/below
    assert close(img.getpixel((10, 100)), RED) and close(img.getpixel((190, 100)), BLUE)   # both halves kept


def test_center_crop_keeps_the_middle():
    # Red | blue | red thirds of a wide image: the centered square is mostly blue, edges cut away.
    img = Image.new("RGB", (900, 300), RED)
    img.paste(BLUE, (300, 0, 600, 300))
    out = process_image(encode(img, "PNG"), ImageOptions(resize_mode="center_crop", image_size=100))
    assert out.image.size == (100, 100) and close(out.image.getpixel((50, 50)), BLUE, 4)
    assert close(out.image.getpixel((1, 50)), BLUE, 40) and close(out.image.getpixel((98, 50)), BLUE, 40)


def test_resize_only_if_bigger_never_upscales():
    small = encode(halves((100, 80)))
    out = process_image(small, ImageOptions(resize_mode="border", resize_only_if_bigger=True))
    assert (out.width, out.height) == (100, 80)
    assert process_image(small, ImageOptions(resize_mode="keep_ratio")).height == 256  # upscales by default


def test_exif_orientation_is_applied():
    # Stored 400x200 with red on the left; orientation 6 means "rotate 90 degrees clockwise to display".
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(halves((400, 200)), exif=exif.tobytes())
    out = process_image(data, ImageOptions(resize_mode="keep_ratio_largest", image_size=200))
    assert (out.original_width, out.original_height) == (200, 400)
    assert out.image.size == (100, 200)
    assert close(out.image.getpixel((50, 10)), RED) and close(out.image.getpixel((50, 190)), BLUE)


@pytest.mark.parametrize("make", [
    lambda: Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
    lambda: Image.new("LA", (64, 64), (0, 0)),
    lambda: _transparent_palette(),
])
def test_transparency_is_composited_on_white(make):
    out = process_image(encode(make(), "PNG"), ImageOptions(image_size=32))
    assert out.image.mode == "RGB" and close(out.image.getpixel((16, 16)), WHITE, 2)


def _transparent_palette():
    img = Image.new("P", (64, 64), 0)
    img.putpalette([0, 0, 0] * 256)
    img.info["transparency"] = 0
    return img


def test_half_transparent_red_blends_towards_white():
    out = process_image(encode(Image.new("RGBA", (64, 64), (255, 0, 0, 128)), "PNG"), ImageOptions(image_size=32))
    r, g, b = out.image.getpixel((16, 16))
    assert r >= 250 and 120 <= g <= 135 and 120 <= b <= 135


def test_16_bit_grey_keeps_its_tones():
    arr = np.full((50, 50), 32768, dtype=np.uint16)  # mid grey in 16 bits
    out = process_image(encode(Image.fromarray(arr), "PNG"), ImageOptions(image_size=25))
    assert close(out.image.getpixel((12, 12)), (128, 128, 128), 2)


@pytest.mark.parametrize("fmt", ENCODE_FORMATS)
def test_encodings_decode_back_in_their_format(fmt):
    quality = 6 if fmt == "png" else 90
    out = process_image(encode(textured((300, 200))), ImageOptions(encode_format=fmt, encode_quality=quality))
    back = Image.open(io.BytesIO(out.data))
    assert out.ext == fmt and back.format == {"jpg": "JPEG", "webp": "WEBP", "png": "PNG"}[fmt]
    assert back.size == (256, 256)


def test_encode_quality_is_used():
    data = encode(textured((600, 400)))
    low = process_image(data, ImageOptions(encode_quality=20)).data
    high = process_image(data, ImageOptions(encode_quality=95)).data
    assert len(low) < len(high) / 2


def test_interpolation_is_configurable_as_in_img2dataset():
    # Nearest neighbour only copies pixels: a red/blue PNG stays pure red and blue; area averaging blends
    # the seam (101 px wide, so it falls inside an output pixel).
    data = encode(halves((301, 100)), "PNG")
    nearest = process_image(data, ImageOptions(image_size=101, resize_mode="keep_ratio_largest",
                                               downscale_interpolation="nearest")).image
    area = process_image(data, ImageOptions(image_size=101, resize_mode="keep_ratio_largest")).image
    assert set(nearest.get_flattened_data()) == {RED, BLUE}
    assert len(set(area.get_flattened_data())) > 2


def test_reduced_scale_jpeg_decode_matches_a_full_decode():
    # draft() decodes a 1600x1200 JPEG at 1/4 scale; the result must look like the careful full path.
    src = textured((1600, 1200))
    out = process_image(encode(src, quality=95), ImageOptions(resize_mode="keep_ratio", image_size=256))
    reference = src.resize(out.image.size, Image.Resampling.LANCZOS)
    diff = np.abs(np.asarray(out.image, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    assert diff.mean() < 4


def test_filters_on_size_and_aspect_ratio():
    assert rejected(encode(halves((100, 40))), min_image_size=50) == "too_small"
    assert rejected(encode(halves((300, 40))), max_aspect_ratio=3) == "bad_aspect_ratio"
    assert process_image(encode(halves((100, 50))), ImageOptions(min_image_size=50, max_aspect_ratio=2)).width == 256


def test_one_by_twenty_thousand():
    data = encode(Image.new("RGB", (1, 20000), RED), "PNG")
    assert rejected(data, max_aspect_ratio=10) == "bad_aspect_ratio"
    out = process_image(data, ImageOptions())  # no aspect filter: still a valid padded image, no crash
    assert out.image.size == (256, 256) and close(out.image.getpixel((127, 128)), RED, 30)  # 1 px wide
    assert rejected(data, max_side=10000) == "side_too_large"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (10000, 9000)), "PNG")  # 90 Mpx in ~15 KB
    assert len(bomb) < 100_000
    assert rejected(bomb) == "too_many_pixels"
    assert rejected(encode(halves((400, 300))), max_pixels=100_000) == "too_many_pixels"


def test_huge_declared_dimensions_with_no_data():
    # A real PNG header claiming 60000x60000 followed by nothing: refused on the header alone.
    header = encode(Image.new("RGB", (8, 8)), "PNG")[:33]
    forged = header[:16] + (60000).to_bytes(4, "big") * 2 + header[24:]
    assert rejected(forged) in ("too_many_pixels", "decode_error")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_files_are_decode_errors(fmt):
    data = encode(textured((300, 200)), fmt)
    assert rejected(data[: len(data) // 2]) == "decode_error"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_corrupt_files_are_decode_errors(fmt):
    data = bytearray(encode(textured((300, 200)), fmt))
    for i in range(40, len(data), 7):  # scribble over the compressed data, keep the magic bytes
        data[i] ^= 0x5A
    assert rejected(bytes(data)) == "decode_error"


@pytest.mark.parametrize("data", [b"", b"<!doctype html><html>404</html>", b'<svg xmlns="http://www.w3.org/2000/svg"/>',
                                  b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", b"\0" * 100])
def test_non_images_and_unsafe_formats_are_not_images(data):
    assert rejected(data) == "not_an_image"


def test_sniffing_agrees_with_the_encoders():
    img = textured((40, 30))
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "AVIF"):
        data = encode(img, fmt)
        assert sniff_format(data[:12]) == fmt
        assert process_image(data, ImageOptions(image_size=20)).image.size == (20, 20)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (50, 50), c) for c in (RED, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    out = process_image(data, ImageOptions(image_size=20))
    assert close(out.image.getpixel((10, 10)), RED, 20)


@pytest.mark.parametrize("options", [dict(resize_mode="stretch"), dict(encode_format="gif"), dict(image_size=0),
                                     dict(encode_format="png", encode_quality=95), dict(encode_quality=101),
                                     dict(max_aspect_ratio=0.5), dict(downscale_interpolation="bogus")])
def test_bad_options_are_input_errors(options):
    with pytest.raises(InputError):
        ImageOptions(**options)


@settings(max_examples=60, deadline=None)
@given(w=st.integers(1, 700), h=st.integers(1, 700), mode=st.sampled_from(RESIZE_MODES),
       size=st.integers(1, 300), fmt=st.sampled_from(["JPEG", "PNG"]))
def test_output_geometry_follows_the_mode(w, h, mode, size, fmt):
    from pipeline.resize import MAX_OUTPUT_SIDE, ImageRejected

    try:
        out = process_image(encode(Image.new("RGB", (w, h), (10, 200, 90)), fmt),
                            ImageOptions(resize_mode=mode, image_size=size))
    except ImageRejected as e:  # only a keep_ratio side past what JPEG stores
        assert e.reason == "output_too_large" and mode == "keep_ratio"
        assert max(w, h) * size / min(w, h) > MAX_OUTPUT_SIDE["jpg"] - 1
        return
    ow, oh = out.image.size
    assert (out.original_width, out.original_height) == (w, h) and (out.width, out.height) == (ow, oh)
    if mode == "no":
        assert (ow, oh) == (w, h)
    elif mode in ("border", "center_crop"):
        assert (ow, oh) == (size, size)
    elif mode == "keep_ratio":
        assert min(ow, oh) == size and abs(ow / oh - w / h) <= max(w / h, h / w) * 2 / size + 1 / min(ow, oh)
    else:
        assert max(ow, oh) == size
    assert Image.open(io.BytesIO(out.data)).size == (ow, oh)


_SMALL_FILES = {fmt: encode(textured((48, 40), seed=3), fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP")}


@settings(max_examples=150, deadline=None)
@given(fmt=st.sampled_from(sorted(_SMALL_FILES)), cut=st.integers(0, 4000),
       flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), max_size=8))
def test_mangled_files_are_rejected_or_decoded_never_crash(fmt, cut, flips):
    # Web bytes are truncated and corrupted in every way: each outcome is an image or a counted reason.
    data = bytearray(_SMALL_FILES[fmt])
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    data = bytes(data[: max(1, len(data) - cut % len(data))])
    try:
        out = process_image(data, ImageOptions(image_size=32))
    except ImageRejected as e:
        assert e.reason in REASONS
    else:
        assert out.image.size == (32, 32) and out.image.mode == "RGB"


def test_encoding_through_the_thread_file_gives_the_bytes_pillow_writes_to_memory():
    # _encode writes into a per-thread memfd (the GIL is released while encoding into a file descriptor):
    # the same bytes as a BytesIO, also for a smaller image after a larger one (nothing left of the longer file).
    from concurrent.futures import ThreadPoolExecutor

    def check():
        for side in (300, 40, 200, 8):
            for fmt, quality in (("jpg", 95), ("webp", 80), ("png", 6), ("jpg", 30)):
                result = process_image(encode(halves((side, side // 2 + 1))),
                                       ImageOptions(image_size=side, encode_format=fmt, encode_quality=quality))
                name = {"jpg": "JPEG", "webp": "WEBP", "png": "PNG"}[fmt]
                params = {"compress_level": quality} if fmt == "png" else {"quality": quality}
                assert result.data == encode(result.image, name, **params)

    check()
    with ThreadPoolExecutor(1) as other:  # another thread, another file
        other.submit(check).result()


def _encode_file_inode(_=None) -> int:
    import os

    from pipeline import resize

    return os.fstat(resize._encode_file().fileno()).st_ino


def test_a_forked_process_encodes_into_a_file_of_its_own():
    """A pool forked after a first encode: the parent's memfd would be shared (one offset, one content) by every
    child, and children encoding at once wrote each other's bytes (a benchmark's pool crashed on them)."""
    import multiprocessing

    import pytest

    if not hasattr(__import__("os"), "memfd_create"):
        pytest.skip("no memfd on this OS")
    process_image(encode(halves((64, 33))), ImageOptions(image_size=64))  # the parent's own file exists now
    parent = _encode_file_inode()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        children = pool.map(_encode_file_inode, range(4))
    assert parent not in children


def test_encoding_without_memfd_falls_back_to_memory(monkeypatch):
    import os

    from pipeline import resize

    def refuse(*args):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "memfd_create", refuse)
    monkeypatch.setattr(resize, "_scratch", __import__("threading").local())
    result = process_image(encode(halves((120, 80))), ImageOptions(image_size=64))
    assert result.data == encode(result.image, "JPEG", quality=95)


def test_a_resize_past_the_output_format_s_largest_side_is_a_reject_not_a_crash():
    """1 x 251 at keep_ratio 261 would be 261 x 65,511: more than JPEG stores (hypothesis found it)."""
    import pytest

    from pipeline.resize import ImageRejected

    with pytest.raises(ImageRejected) as e:
        process_image(encode(Image.new("RGB", (1, 251), (10, 200, 90)), "JPEG"),
                      ImageOptions(resize_mode="keep_ratio", image_size=261))
    assert e.value.reason == "output_too_large"
    thin = process_image(encode(Image.new("RGB", (1, 251), (10, 200, 90)), "JPEG"),
                         ImageOptions(resize_mode="keep_ratio", image_size=261, encode_format="png",
                                      encode_quality=6))
    assert thin.image.size == (261, 65511)
