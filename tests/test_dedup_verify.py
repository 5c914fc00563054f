"""Retrieve, then verify: clean flat graphics that collide with eval images in pHash space are kept, and
altered copies (of photos and of flat graphics) are still found, as written by the pipeline."""

import io

import imagehash
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from dedup import image_hashes, verify
from dedup.eval_index import DEFAULT_MIN_COLOUR, DEFAULT_MIN_EDGES, DEFAULT_MIN_PIXELS, EvalIndex
from dedup.eval_sets import EvalItem
from dedup.image_hashes import eval_variants, sample_hashes
from pipeline.resize import ImageOptions, process_image
from image_helpers import photo, png

# Tricolours: pairs that share stripes and brightness order but not colours, like real flags.
TRICOLOURS = [((0, 85, 164), (255, 255, 255), (239, 65, 53)), ((0, 146, 70), (255, 255, 255), (206, 43, 55)),
              ((0, 114, 206), (0, 0, 0), (255, 255, 255)), ((0, 0, 0), (221, 0, 0), (255, 206, 0)),
              ((255, 255, 255), (0, 57, 166), (213, 43, 30)), ((0, 56, 147), (252, 209, 22), (206, 17, 38))]
WORDS = ["Sale", "Open", "Menu", "News", "Login", "Blog", "Shop", "Team"]


def flag(colours, vertical: bool) -> Image.Image:
    im = Image.new("RGB", (300, 200))
    d = ImageDraw.Draw(im)
    for k, c in enumerate(colours):
        d.rectangle((k * 100, 0, k * 100 + 99, 199) if vertical else (0, k * 67, 299, k * 67 + 66), fill=c)
    return im


def banner(word: str, colour, tail: str = " 20% off") -> Image.Image:
    im = Image.new("RGB", (400, 120), colour)
    ImageDraw.Draw(im).text((30, 30), f"{word}{tail}", fill=(255, 255, 255), font_size=48)
    return im


def sign(text: str, colour) -> Image.Image:
    """Small white letters on a square of one colour."""
    im = Image.new("RGB", (300, 300), colour)
    ImageDraw.Draw(im).text((40, 30), text, fill=(255, 255, 255), font_size=30)
    return im


def icon(shape: str, colour) -> Image.Image:
    """A glyph on white, as icons sit on web pages."""
    im = Image.new("RGB", (128, 128), (255, 255, 255))
    d = ImageDraw.Draw(im)
    box = (24, 24, 104, 104)
    {"circle": lambda: d.ellipse(box, fill=colour),
     "square": lambda: d.rounded_rectangle(box, 12, fill=colour),
     "triangle": lambda: d.polygon([(64, 20), (108, 104), (20, 104)], fill=colour),
     "ring": lambda: d.ellipse(box, outline=colour, width=14),
     "plus": lambda: (d.rectangle((54, 20, 74, 108), fill=colour), d.rectangle((20, 54, 108, 74), fill=colour)),
     "cross": lambda: (d.line((28, 28, 100, 100), fill=colour, width=18), d.line((28, 100, 100, 28), fill=colour,
                                                                                 width=18)),
     }[shape]()
    return im


def written(im: Image.Image, mode: str = "center_crop") -> Image.Image:
    """What a shard holds: the pipeline's resize and JPEG encode, decoded back."""
    out = process_image(png(im), ImageOptions(resize_mode=mode))
    return Image.open(io.BytesIO(out.data)).convert("RGB")


SHAPES = ["circle", "square", "triangle", "ring", "plus", "cross"]
COLOURS = [(200, 30, 30), (30, 90, 200), (20, 140, 60), (240, 170, 0)]

EVAL = {
    **{f"flag{i}{'v' if v else 'h'}": flag(c, v) for i, c in enumerate(TRICOLOURS[:3]) for v in (True, False)},
    **{f"banner-{w}": banner(w, (200, 30, 30)) for w in WORDS[:4]},
    **{f"icon-{s}": icon(s, COLOURS[0]) for s in SHAPES[:3]},
    **{f"photo{i}": photo(i) for i in range(4)},
}
# Unrelated flat graphics: same layouts, other colours or shapes, and other words on the same colour at the
# same place (their colour grids agree, 0.95: letters are finer than 16x16; their edges do not). Not the same
# words' tail: a center crop of "Menu 20% off" and "Login 20% off" writes the same "20% off", a real copy.
CLEAN = [
    *[flag(c, v) for c in TRICOLOURS[3:] for v in (True, False)],
    *[banner(w, (30, 90, 200)) for w in WORDS],
    *[banner(w, (200, 30, 30), " now") for w in WORDS[4:]],
    *[icon(s, c) for s in SHAPES[3:] for c in COLOURS[:2]],
    *[icon(s, COLOURS[1]) for s in SHAPES[:3]],
]


@pytest.fixture(scope="module")
def index():
    idx, report = EvalIndex.build([("hard", [EvalItem(k, png(im)) for k, im in EVAL.items()])])
    assert report.items == {"hard": len(EVAL)}
    return idx


def test_clean_flat_graphics_collide_in_phash_space_but_are_not_matched(index):
    queries = [written(im) for im in CLEAN]
    codes = np.array([c for im in EVAL.values() for _, c in eval_variants(im)], dtype=np.uint64)
    near = [min(int(np.bitwise_count(codes ^ np.uint64(c)).min()) for c in sample_hashes(q)) for q in queries]
    # The hard part is real: pHash alone (at today's former radius 8) would drop many of these clean images.
    assert sum(d <= 8 for d in near) >= len(CLEAN) // 3, near
    matched = [(i, m) for i, q in enumerate(queries) for m in index.lookup(q)]
    assert matched == []


ALTER = {
    "resize_jpeg": lambda im: Image.open(io.BytesIO(_jpeg(im.resize((im.width // 2, im.height // 2)), 40))),
    "crop10_corner": lambda im: im.crop((0, 0, round(im.width * 0.9), round(im.height * 0.9))),
    "crop10_offcentre": lambda im: im.crop((im.width // 10, round(im.height * 0.04), im.width,
                                            round(im.height * 0.94))),
    "flip": ImageOps.mirror,
    "brightness_contrast": lambda im: ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.15)).enhance(0.85),
    "overlay_text": lambda im: _overlay(im),
}


def _jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _overlay(im: Image.Image) -> Image.Image:
    im = im.copy()
    ImageDraw.Draw(im).text((im.width // 10, im.height * 3 // 4), "© stock 2024", fill=(255, 255, 255),
                            font_size=max(8, im.height // 14), stroke_width=1, stroke_fill=(0, 0, 0))
    return im


@pytest.mark.parametrize("mode", ["center_crop", "border"])
def test_verification_accepts_every_altered_copy(mode):
    """The second stage never loses a copy: every alteration of every kind passes the pre-filter, then both
    scores on the reading the pre-filter picked (as EvalIndex.lookup runs them)."""
    low = []
    for name in ["photo0", "photo1", "flag0v", "flag1h", "flag2v", "banner-Sale", "icon-triangle", "icon-circle"]:
        thumb, aspect = verify.thumbnail(EVAL[name]), EVAL[name].width / EVAL[name].height
        stored = verify.signatures(thumb, aspect)[None]
        for alter in sorted(ALTER):
            features = verify.sample_features(written(ALTER[alter](EVAL[name]).convert("RGB"), mode))
            (score,), (reading,) = verify.prefilter(verify.sample_signature(features), stored, np.array([aspect]))
            accepted, s = verify.verify([features[reading]], thumb, aspect, DEFAULT_MIN_COLOUR,
                                        DEFAULT_MIN_PIXELS, DEFAULT_MIN_EDGES)
            if score < verify.PREFILTER or not accepted:
                low.append((name, alter, round(score, 3), round(s, 3)))
    assert low == []


def test_a_crowd_of_look_alikes_costs_at_most_max_verified_pixel_checks(monkeypatch):
    """Flat graphics crowd in pHash space: an icon's copy retrieves every variant of its template. The
    pre-filter ranks them and only the best MAX_VERIFIED are checked on pixels; the copy is among them."""
    def variant(k: int) -> Image.Image:  # the triangle with a white dot at a place of its own
        im = icon("triangle", COLOURS[0])
        x, y = 44 + 4 * (k % 9), 60 + 4 * (k // 9)
        ImageDraw.Draw(im).ellipse((x, y, x + 7, y + 7), fill=(255, 255, 255))
        return im

    crowd = {f"dot{k}": variant(k) for k in range(36)}
    idx, _ = EvalIndex.build([("icons", [EvalItem(k, png(im)) for k, im in {**crowd, "plain": EVAL[
        "icon-triangle"], "circle": EVAL["icon-circle"]}.items()])])
    calls = []
    real = verify.verify
    monkeypatch.setattr(verify, "verify", lambda *a, **k: calls.append(None) or real(*a, **k))
    sample = written(ALTER["crop10_offcentre"](EVAL["icon-triangle"]))
    codes = np.array(sample_hashes(sample), dtype=np.uint64)
    _, ids, _ = idx._hamming.query_many(codes, idx.radius)
    assert len(set(idx.code_item[ids].tolist())) > verify.MAX_VERIFIED  # retrieval hands over the crowd
    assert "plain" in {m.eval_id for m in idx.lookup(sample)}
    assert 0 < len(calls) <= verify.MAX_VERIFIED


@pytest.mark.parametrize("mode", ["center_crop", "border"])
def test_altered_copies_of_photos_and_icons_are_found_and_nothing_else(index, mode):
    missed, wrong = [], []
    for name in ["photo0", "photo1", "photo2", "photo3", "icon-triangle"]:
        for alter in sorted(ALTER):
            found = index.lookup(written(ALTER[alter](EVAL[name]).convert("RGB"), mode))
            hashed = [m for m in found if m.method != "sha256"]
            assert all(m.verification == verify.METHOD and m.score >= min(index.min_pixels, index.min_edges)
                       for m in hashed)
            if name not in {m.eval_id for m in hashed}:
                missed.append((name, alter))
            wrong += [(name, alter, m.eval_id) for m in found if m.eval_id != name]
    assert wrong == []
    # Retrieval (pHash within the radius) is what misses: overlay text moves a photo's hash up to 14 bits.
    assert {alter for _, alter in missed} <= {"overlay_text"} and len(missed) <= 2, missed


@pytest.mark.xfail(strict=True, reason="known gap (bench/RESULTS.md): pHash retrieval misses tricolour flags, "
                                       "whose stripes of equal brightness leave the hash's DCT signs to noise")
def test_altered_tricolours_are_retrieved(index):
    """(Fails today; passes when retrieval gets a key that sees colour.)"""
    missed = [(name, alter) for name in ["flag0v", "flag1h", "flag2v"] for alter in sorted(ALTER)
              if name not in {m.eval_id for m in index.lookup(written(ALTER[alter](EVAL[name]).convert("RGB"),
                                                                      "border"))}]
    assert missed == []


def test_cropped_circle_is_not_taken_for_a_square(index):
    """On a 16x16 colour grid a cropped circle and a rounded square of one colour agree (0.93); their edges
    on the 64 px thumbnail do not."""
    found = index.lookup(written(ALTER["crop10_offcentre"](EVAL["icon-circle"])))
    assert {m.eval_id for m in found} == {"icon-circle"}


def test_look_alikes_agree_in_colour_but_fail_pixels_or_edges():
    """The hard kinds of look-alike (bench/RESULTS.md): the coarse colour alignment cannot tell them from a
    copy, the 64 px decision can. Same layout in other colours fails the pixels; other words at the same
    place on the same (or a near) colour fail the edges. Copies of the same pictures pass (test above)."""
    thumb = {k: (verify.thumbnail(im), im.width / im.height) for k, im in EVAL.items()}
    thumb["sign"] = (verify.thumbnail(sign("Careers 28", (90, 100, 190))), 1.0)
    recoloured = flag(((0, 146, 70), (255, 255, 255), (239, 65, 53)), True)  # flag0v with a green stripe
    other_words = banner("Team", (200, 30, 30))  # banner-Sale's place and colour
    # Small letters on a near colour: a gain and offset fit the colour (99.8% of pixels agree), the letters'
    # edges do not (0.52; a grey step of 48 found too few edges in the thumbnail and passed it vacuously).
    small_words = sign("News 50", (100, 110, 200))
    for sample, name, failing in [(recoloured, "flag0v", 1), (other_words, "banner-Sale", 2),
                                  (small_words, "sign", 2)]:
        colour, pixels, edges = verify.measure(verify.sample_features(written(sample, "border")), *thumb[name],
                                                  -1.0)
        assert colour >= DEFAULT_MIN_COLOUR * 0.95, (name, colour)
        assert (pixels, edges)[failing - 1] < (DEFAULT_MIN_PIXELS, DEFAULT_MIN_EDGES)[failing - 1], (name, pixels,
                                                                                                    edges)


def test_compiled_alignment_finds_the_region_a_copy_shows():
    """The compiled coarse search points at the crop and mirror a copy is, and unrelated pictures stay low."""
    im = EVAL["photo0"]
    thumb = verify.thumbnail(im)
    assert thumb.shape == (55, 73, 3)  # 320 x 240 in its aspect ratio, at most 64 * 64 pixels
    crop = ImageOps.mirror(im.crop((0, 0, 288, 216)))  # 90% from the top left corner, mirrored
    colour, reading, box, mirrored = verify.align(verify.sample_features(crop), thumb, im.width / im.height)
    assert colour > 0.98 and mirrored and np.allclose(box, (0.0, 0.9, 0.0, 0.9))
    other = verify.align(verify.sample_features(EVAL["photo1"]), thumb, im.width / im.height)[0]
    assert other < 0.5


def test_items_without_a_perceptual_hash_are_counted_with_the_reason(capsys, tmp_path):
    from openwit.cli import main as openwit

    folder = tmp_path / "eval"
    folder.mkdir()
    EVAL["photo0"].save(folder / "photo.png")
    Image.new("RGB", (64, 64), (10, 20, 30)).save(folder / "flat.png")
    Image.new("RGB", (64, 64), (128, 128, 128)).save(folder / "grey.png")
    photo(9).resize((12, 9)).save(folder / "tiny.png")
    assert openwit(["eval-index", "--eval-set", f"e={folder}", "--output", str(tmp_path / "e.idx")]) == 0
    err = capsys.readouterr().err
    assert "3 without a perceptual hash" in err and "'flat': 2" in err and "'tiny': 1" in err
    assert "unhashed flat.png: flat (64x64)" in err or "unhashed flat: flat (64x64)" in err


def test_thresholds_are_saved_with_the_index_and_thumbnails_memory_mapped(tmp_path):
    from dedup import build_index
    from openwit.errors import InputError

    idx, _ = EvalIndex.build([("hard", [EvalItem(k, png(EVAL[k])) for k in ("photo0", "banner-Sale")])],
                             min_edges=0.8)
    idx.save(str(tmp_path / "eval.idx"))
    loaded = EvalIndex.load(str(tmp_path / "eval.idx"))
    assert loaded.min_edges == pytest.approx(0.8) and loaded.min_pixels == pytest.approx(DEFAULT_MIN_PIXELS)
    assert isinstance(loaded.thumbs, np.memmap)
    for item in range(2):
        assert np.array_equal(loaded.thumbnail(item), idx.thumbnail(item))
    assert loaded.thumbnail(1).shape == (35, 116, 3)  # a 400 x 120 banner keeps its letters' proportions
    assert {m.eval_id for m in loaded.lookup(written(EVAL["banner-Sale"]))} == {"banner-Sale"}
    for option in ("--min-edges", "--min-pixels"):
        with pytest.raises(InputError, match=option):
            build_index.parse_args(["--eval-set", f"x={tmp_path}", "--output", "o.idx", option, "1.5"])


def test_an_index_of_an_older_format_asks_to_rebuild_it(tmp_path):
    from openwit.errors import InputError

    np.savez(tmp_path / "old.idx", meta=np.array('{"format": "openwit-eval-index", "version": 2}'))
    with pytest.raises(InputError, match="version 2.*Re-run `openwit eval-index`"):
        EvalIndex.load(str(tmp_path / "old.idx.npz"))


def rejected_copies(image: Image.Image, mode: str) -> list[str]:
    """The alterations of `image` (ALTER), written by the pipeline, that verification rejects."""
    thumb, aspect = verify.thumbnail(image), image.width / image.height
    return [alter for alter in sorted(ALTER) if not verify.verify(
        verify.sample_features(written(ALTER[alter](image).convert("RGB"), mode)), thumb, aspect,
        DEFAULT_MIN_COLOUR, DEFAULT_MIN_PIXELS, DEFAULT_MIN_EDGES)[0]]


def face(eyes: str) -> Image.Image:
    """An emoji-like face on white; the same face with other eyes is another emoji, not a copy."""
    im = Image.new("RGB", (128, 128), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.ellipse((8, 8, 120, 120), fill=(250, 200, 40), outline=(200, 140, 20), width=3)
    if eyes == "open":
        d.ellipse((38, 38, 52, 58), fill=(60, 40, 20))
        d.ellipse((76, 38, 90, 58), fill=(60, 40, 20))
    else:
        d.line((36, 48, 54, 48), fill=(60, 40, 20), width=5)
        d.line((74, 48, 92, 48), fill=(60, 40, 20), width=5)
    d.arc((34, 56, 94, 100), 20, 160, fill=(60, 40, 20), width=6)
    return im


@pytest.mark.parametrize("mode", ["center_crop", "border"])
def test_a_look_alike_that_differs_in_one_spot_fails_there_and_copies_pass(mode):
    """Other eyes in the same face: 99% of the pixels agree and 87% of the face's edges are found, which a
    whole-region edge share accepts; around the eyes a quarter of them are, which the worst ninth rejects.
    Every altered copy of the face keeps 90% or more in every ninth."""
    thumb = verify.thumbnail(face("open"))
    features = verify.sample_features(written(face("closed"), mode))
    colour, pixels, edges = verify.measure(features, thumb, 1.0, -1.0)
    cells, region = verify.refine(features, thumb, *verify.align(features, thumb, 1.0)[1:])
    whole = verify._edge_score(cells, region, verify.EDGE_STEP, verify.EDGE_STEP / 2, verify.MIN_EDGE_PIXELS)[0]
    assert colour >= DEFAULT_MIN_COLOUR and pixels >= DEFAULT_MIN_PIXELS and whole >= DEFAULT_MIN_EDGES
    assert edges < DEFAULT_MIN_EDGES
    assert rejected_copies(face("open"), mode) == []


def test_a_plain_field_of_the_banners_colour_is_not_a_copy():
    """The square centre of a banner whose word sits at its left end is a plain field: a sample of a near
    colour with a faint mark agrees on every pixel, but nothing in the region can tell it from any other
    field of that colour (it used to pass the edge test for want of edges)."""
    eval_banner = Image.new("RGB", (400, 120), (40, 160, 60))
    ImageDraw.Draw(eval_banner).text((8, 30), "Go", fill=(255, 255, 255), font_size=48)
    sample = Image.new("RGB", (400, 120), (46, 166, 64))
    ImageDraw.Draw(sample).text((340, 90), "ok", fill=(60, 180, 80), font_size=16)
    colour, pixels, edges = verify.measure(verify.sample_features(written(sample)), verify.thumbnail(eval_banner),
                                           400 / 120, -1.0)
    assert colour >= DEFAULT_MIN_COLOUR and pixels >= DEFAULT_MIN_PIXELS
    assert edges == 0.0


def test_off_centre_crops_of_a_banner_squared_by_the_resize_are_found(index):
    """A banner cropped 10% off two sides and then center-cropped shows a square off the banner's centre
    square by 15% of its side: 16-26 bits from every stored variant until the index kept those squares.
    (The square may show only the " 20% off" the four banners share; then they all match, as they should.)"""
    missed = []
    for name in ["banner-Sale", "banner-Open", "banner-Menu", "banner-News"]:
        im = EVAL[name]
        cw, ch = round(im.width * 0.9), round(im.height * 0.9)
        for ax in (0, 1):
            for ay in (0, 1):
                left, top = ax * (im.width - cw), ay * (im.height - ch)
                found = index.lookup(written(im.crop((left, top, left + cw, top + ch))))
                if name not in {m.eval_id for m in found}:
                    missed.append((name, ax, ay, sorted(m.eval_id for m in found)))
    assert missed == []


def terminal(colour) -> Image.Image:
    """A terminal icon: a rounded field of one colour with a prompt."""
    im = Image.new("RGB", (128, 128), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((8, 16, 120, 112), 10, fill=colour)
    d.line((28, 44, 48, 60, 28, 76), fill=(255, 255, 255), width=6)
    d.line((56, 80, 88, 80), fill=(255, 200, 60), width=6)
    return im


@pytest.mark.parametrize("mode", ["center_crop", "border"])
def test_the_same_icon_in_another_hue_fails_and_copies_pass(mode):
    """A gain and offset map the brown field onto a pink one within the colour tolerance on every pixel; the
    channel differences (which an offset leaves and a gain scales) do not agree. Copies agree in both."""
    eval_icon = terminal((135, 54, 45))
    thumb = verify.thumbnail(eval_icon)
    features = verify.sample_features(written(terminal((166, 62, 99)), mode))
    cells, region = verify.refine(features, thumb, *verify.align(features, thumb, 1.0)[1:])
    gain, offset = verify._fit(cells, region, *verify.GAINS)
    colour, hue = verify._agreeing(cells, np.clip(gain * region + offset, 0, 255).astype(np.float32),
                                   verify.PIXEL_TOLERANCE, region, gain)
    assert colour >= DEFAULT_MIN_PIXELS and hue < DEFAULT_MIN_PIXELS
    assert verify.agreement(cells, region)[0] < DEFAULT_MIN_PIXELS
    assert rejected_copies(eval_icon, mode) == []


def star(dot: bool) -> Image.Image:
    """A star of David on a rounded purple field, with or without a dot at its centre (two emoji)."""
    im = Image.new("RGB", (128, 128), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((6, 6, 122, 122), 14, fill=(150, 60, 190))
    for points in ([(64, 18), (104, 88), (24, 88)], [(64, 110), (24, 40), (104, 40)]):
        d.polygon(points, outline=(255, 255, 255), width=6)
    if dot:
        d.ellipse((54, 54, 74, 74), fill=(255, 255, 255))
    return im


@pytest.mark.parametrize("mode", ["center_crop", "border"])
def test_a_look_alike_without_a_detail_of_the_eval_image_fails_and_copies_pass(mode):
    """The star without its dot: 99% of the pixels agree, 94% of the eval edges are found and every ninth keeps
    most of its own (the dot's edges are a few of a busy ninth), so the shares accept it; but the dot's edges
    fall where the sample is plain, which no copy does. Every altered copy of the dotted star passes."""
    thumb = verify.thumbnail(star(dot=True))
    features = verify.sample_features(written(star(dot=False), mode))
    cells, region = verify.refine(features, thumb, *verify.align(features, thumb, 1.0)[1:])
    whole, worst, _ = verify._edge_score(cells, region, verify.EDGE_STEP, verify.EDGE_STEP / 2,
                                         verify.MIN_EDGE_PIXELS)
    assert min(whole, verify.BLOCK_EDGE_SCALE * worst) >= DEFAULT_MIN_EDGES
    assert verify.lost_to_plain(cells, region, verify.EDGE_STEP / 2) >= verify.MAX_LOST_TO_PLAIN
    pixels, edges = verify.agreement(cells, region)
    assert pixels >= DEFAULT_MIN_PIXELS and edges < DEFAULT_MIN_EDGES
    assert rejected_copies(star(dot=True), mode) == []


def faint_word(field, ink) -> Image.Image:
    """A big word in an ink close to its field: 10-35 levels off in grey, or another hue at the same grey."""
    im = Image.new("RGB", (300, 300), field)
    ImageDraw.Draw(im).text((40, 90), "Wyc", fill=ink, font_size=110)
    return im


@pytest.mark.parametrize("mode", ["center_crop", "border"])
@pytest.mark.parametrize("field, ink", [((30, 185, 200), (20, 150, 165)), ((190, 210, 80), (185, 160, 175))],
                         ids=["darker", "same-grey"])
def test_faint_letters_are_details_a_look_alike_lacks_and_copies_keep(mode, field, ink):
    """The eval image's letters have no strong grey edge, so its region used to pass as a smooth photo's; a
    banner of the same field with other small words agreed on 97-98% of the pixels and was taken for a copy
    (gen_text against the 100k eval set, bench/RESULTS.md). Tested on their own colour axis, the faint letters
    are missing from it; every altered copy of the faint banner keeps them."""
    eval_image = faint_word(field, ink)
    thumb = verify.thumbnail(eval_image)
    sample = Image.new("RGB", (300, 300), field)
    ImageDraw.Draw(sample).text((30, 130), "Gallery 77", fill=(20, 20, 20), font_size=34)
    features = verify.sample_features(written(sample, mode))
    cells, region = verify.refine(features, thumb, *verify.align(features, thumb, 1.0)[1:])
    strong = verify._edge_score(cells, region, verify.EDGE_STEP, verify.EDGE_STEP / 2, verify.MIN_EDGE_PIXELS)[2]
    assert strong < verify.MIN_EDGE_PIXELS and region.reshape(-1, 3).std(axis=0).max() >= verify.PLAIN_STD
    pixels, edges = verify.agreement(cells, region)
    assert pixels >= DEFAULT_MIN_PIXELS and edges < DEFAULT_MIN_EDGES
    assert rejected_copies(eval_image, mode) == []


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2**31), st.integers(8, 96), st.integers(8, 96), st.sampled_from(["RGB", "L", "RGBA"]))
def test_our_phash_is_imagehash_phash_bit_for_bit(seed, width, height, mode):
    """Samples and eval variants are hashed by image_hashes.thumbnail + hash_thumbnail: that must be
    imagehash.phash, whose bits the shard parquet records too. Smooth random images (noise blurred) of any
    size and mode."""
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    image = noise.filter(ImageFilter.GaussianBlur(2)).convert(mode)
    bits = imagehash.phash(image).hash.ravel()
    ours = image_hashes.hash_thumbnail(image_hashes.thumbnail(image.convert("L")))
    assert ours == int(np.packbits(bits).view(">u8")[0])


def same_grey_banner(word: str) -> Image.Image:
    """Pink letters on a lime field, about the same grey: a flat luma (no pHash of it at all)."""
    im = Image.new("RGB", (400, 120), (190, 210, 80))
    ImageDraw.Draw(im).text((20, 20), word, fill=(185, 160, 175), font_size=70)
    return im


@pytest.mark.parametrize("mode", ["center_crop", "border"])
def test_a_banner_whose_luma_is_flat_is_hashed_along_its_colours_and_its_copies_found(mode):
    """Its luma is flat, so it used to be indexed by exact pixels only: every altered copy was missed. Hashed
    along its main colour axis (image_hashes.hash_planes), its copies are found: all but overlay text, whose
    white and black letters make the written copy's colours vary most in luma (bench/RESULTS.md). Another
    banner of the same colours is not matched."""
    eval_image = same_grey_banner("Lumo 86")
    assert image_hashes.is_flat(eval_image.convert("L"))
    index, _ = EvalIndex.build([("e", [EvalItem("lumo", png(eval_image), None)])])
    missed = [alter for alter in sorted(ALTER) if alter != "overlay_text"
              and not index.lookup(written(ALTER[alter](eval_image).convert("RGB"), mode))]
    assert missed == []
    assert index.lookup(written(same_grey_banner("Wexa 31"), mode)) == []
