"""Eval sets in every published form become one index file; lookups find altered copies and only them."""

import csv
import io
import pickle
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageEnhance, ImageOps

from dedup.eval_index import EvalIndex, OverlapMatch
from dedup.eval_sets import EvalItem, read_eval_set
from dedup.overlap import OVERLAP_SCHEMA, overlap_rows, overlap_table
from openwit.cli import main as openwit
from openwit.errors import InputError
from image_helpers import photo, png


def jpeg(image: Image.Image, quality=40) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def as_sample(image: Image.Image) -> Image.Image:
    """What the pipeline hands to lookup: 256 px, center crop."""
    return ImageOps.fit(image, (256, 256), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def eval_photos():
    return [photo(i) for i in range(8)]


@pytest.fixture(scope="module")
def index(eval_photos):
    items = [EvalItem(f"img{i}", png(im), label=str(i % 2)) for i, im in enumerate(eval_photos)]
    captions = [EvalItem("c0", png(photo(100)), captions=("A man riding a brown horse on the beach.",
                                                         "Someone rides a horse by the sea."))]
    idx, report = EvalIndex.build([("photos", items), ("coco", captions)])
    assert report.items == {"photos": 8, "coco": 1}
    return idx


@pytest.mark.parametrize("alter", [
    pytest.param(lambda im: im, id="same"),
    pytest.param(lambda im: im.resize((160, 120)), id="resize"),
    pytest.param(lambda im: jpeg(im, 35), id="jpeg"),
    pytest.param(ImageOps.mirror, id="flip"),
    pytest.param(lambda im: im.crop((16, 12, 320, 240)), id="crop10"),
    pytest.param(lambda im: ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.2)).enhance(0.8),
                 id="brightness_contrast"),
    pytest.param(lambda im: ImageOps.pad(im, (256, 256), color=(255, 255, 255)), id="border_resize"),
])
def test_altered_copy_of_an_eval_image_is_found(index, eval_photos, alter):
    for i in (0, 5):
        matches = index.lookup(as_sample(alter(eval_photos[i])))
        assert {(m.eval_set, m.eval_id) for m in matches} == {("photos", f"img{i}")}
        assert all(0 <= m.distance <= index.radius for m in matches)


def test_letterboxed_copy_of_a_dark_edged_photo_is_found(eval_photos):
    # The pad bar and the photo's own black bottom merge into one thick bar: only the thinner, symmetric
    # part is padding, and trimming it must leave the photo whole.
    dark = np.asarray(photo(77), dtype=np.uint8).copy()
    dark[-60:] = 0
    dark = Image.fromarray(dark)
    idx, _ = EvalIndex.build([("dark", [EvalItem("d", png(dark))] +
                              [EvalItem(f"p{i}", png(im)) for i, im in enumerate(eval_photos)])])
    sample = ImageOps.pad(jpeg(dark.resize((200, 150)), 60), (256, 256), color=(0, 0, 0))
    assert {m.eval_id for m in idx.lookup(sample)} == {"d"}
    assert {m.eval_id for m in idx.lookup(as_sample(dark))} == {"d"}


def test_batched_lookup_answers_like_one_by_one(index, eval_photos):
    samples = [as_sample(jpeg(eval_photos[1])), as_sample(photo(400)), Image.new("RGB", (256, 256), (9, 9, 9)),
               as_sample(ImageOps.mirror(eval_photos[6])), as_sample(photo(100))]
    captions = [None, "a man riding a brown horse on the beach", "", "unrelated words about nothing", None]
    batched = index.lookup_many(samples, captions)
    assert batched == [index.lookup(s, c) for s, c in zip(samples, captions)]
    assert [sorted({m.eval_id for m in found}) for found in batched] == [["img1"], ["c0"], [], ["img6"], ["c0"]]
    assert index.lookup_many([]) == []


def test_unrelated_images_are_not_matched(index):
    for seed in range(200, 240):
        assert index.lookup(as_sample(photo(seed))) == []
    flat = Image.new("RGB", (256, 256), (40, 90, 200))
    assert index.lookup(flat) == []  # a flat image has no perceptual content to match on


def test_identical_pixels_match_by_sha256_even_for_flat_images():
    flat = Image.new("RGB", (64, 64), (10, 20, 30))
    idx, _ = EvalIndex.build([("blank", [EvalItem("b", png(flat))])])
    assert idx.lookup(flat.copy()) == [OverlapMatch("blank", "b", "sha256", 0.0, "identical_pixels", 1.0)]
    assert idx.lookup(Image.new("RGB", (64, 64), (10, 20, 31))) == []


def test_caption_copies_match_and_other_captions_do_not(index):
    unrelated_image = as_sample(photo(300))
    found = index.lookup(unrelated_image, "a man riding a brown horse on the beach")
    assert [(m.eval_id, m.method, m.distance) for m in found] == [("c0", "caption_minhash", 0.0)]
    near = index.lookup(unrelated_image, "A man riding a brown horse on the beach at sunset.")
    assert [m.eval_id for m in near] == ["c0"] and 0 < near[0].distance <= index.caption_max_distance
    assert index.lookup(unrelated_image, "A woman riding a bicycle in the city.") == []
    assert index.lookup(unrelated_image, "a horse") == []  # too short to say anything about copying


def test_save_load_and_pickle_keep_every_answer(index, eval_photos, tmp_path):
    path = str(tmp_path / "eval.idx")
    index.save(path)
    for again in (EvalIndex.load(path), pickle.loads(pickle.dumps(index))):
        sample = as_sample(jpeg(eval_photos[3]))
        assert again.lookup(sample) == index.lookup(sample)
        assert again.lookup(sample, "a man riding a brown horse on the beach") == \
            index.lookup(sample, "a man riding a brown horse on the beach")


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(InputError, match="cannot read eval index"):
        EvalIndex.load(str(tmp_path / "nope.idx"))
    (tmp_path / "junk.idx").write_bytes(b"not an index")
    with pytest.raises(InputError, match="not a readable eval index"):
        EvalIndex.load(str(tmp_path / "junk.idx"))


# ---- eval set forms --------------------------------------------------------------------------------------


def write_folder(root, images):
    for i, im in enumerate(images):
        (root / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        im.save(root / f"class{i % 2}" / f"{i:03d}.png")


def test_folder_labels_come_from_class_subfolders(tmp_path, eval_photos):
    write_folder(tmp_path, eval_photos[:4])
    (tmp_path / "class0" / "notes.txt").write_text("not an image")
    items = list(read_eval_set(str(tmp_path)))
    assert [(it.eval_id, it.label) for it in items] == [
        ("class0/000.png", "class0"), ("class0/002.png", "class0"),
        ("class1/001.png", "class1"), ("class1/003.png", "class1")]


def test_webdataset_tar_with_labels_and_captions(tmp_path, eval_photos):
    path = tmp_path / "eval.tar"
    with tarfile.open(path, "w") as tar:
        for i, im in enumerate(eval_photos[:3]):
            for name, data in ((f"s{i}.jpg", png(im)), (f"s{i}.cls", str(i).encode()),
                               (f"s{i}.txt", f"caption one {i}\ncaption two {i}\n".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    items = list(read_eval_set(str(path)))
    assert [(it.eval_id, it.label, it.captions) for it in items] == [
        (f"s{i}", str(i), (f"caption one {i}", f"caption two {i}")) for i in range(3)]
    assert Image.open(io.BytesIO(items[2].image_bytes)).size == (320, 240)


def test_parquet_with_hf_image_structs_and_caption_lists(tmp_path, eval_photos):
    table = pa.table({
        "image": [{"bytes": png(im), "path": None} for im in eval_photos[:2]] + [{"bytes": None, "path": "x"}],
        "captions": [["a red thing on a table"], ["two dogs", "a dog and a dog"], []],
    })
    pq.write_table(table, tmp_path / "coco.parquet")
    items = list(read_eval_set(str(tmp_path / "coco.parquet")))
    assert [it.eval_id for it in items] == ["row0", "row1", "row2"]
    assert items[1].captions == ("two dogs", "a dog and a dog")
    assert items[2].image_bytes is None and "row 2" in items[2].error


def test_csv_of_paths_relative_to_the_csv(tmp_path, eval_photos):
    eval_photos[0].save(tmp_path / "a.png")
    with open(tmp_path / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows([["a.png", "cat"], ["missing.png", "dog"]])
    items = list(read_eval_set(str(tmp_path / "list.csv")))
    assert [(it.eval_id, it.label, it.error is None) for it in items] == [("a.png", "cat", True),
                                                                         ("missing.png", "dog", False)]
    assert "line 3" in items[1].error


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nothing-here", "does not exist"),
    (lambda p: (p / "x.json").write_text("{}") and p / "x.json", "unknown form"),
    (lambda p: (p / "bad.csv").write_text("file,label\na.png,1\n") and p / "bad.csv", "no 'path' column"),
    (lambda p: (p / "bad.parquet").write_bytes(b"PAR1junk") and p / "bad.parquet", "not a readable Parquet"),
])
def test_unusable_eval_sets_are_input_errors(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        list(read_eval_set(str(make(tmp_path))))


# ---- the command ------------------------------------------------------------------------------------------


def test_eval_index_command_builds_one_index_from_several_sets(tmp_path, eval_photos, capsys):
    write_folder(tmp_path / "cifar", eval_photos[:4])
    (tmp_path / "cifar" / "class0" / "broken.png").write_bytes(b"\x89PNG truncated")
    pq.write_table(pa.table({"image": [png(eval_photos[5])], "caption": ["a dog chasing a red ball"],
                             "id": [42]}), tmp_path / "coco.parquet")
    out = str(tmp_path / "eval.idx")
    rc = openwit(["eval-index", "--eval-set", f"cifar={tmp_path / 'cifar'}",
                  "--eval-set", f"coco={tmp_path / 'coco.parquet'}", "--output", out])
    assert rc == 0
    err = capsys.readouterr().err
    assert "cifar: 4 items" in err and "1 rejected" in err and "broken.png" in err
    index = EvalIndex.load(out)
    assert [m.eval_id for m in index.lookup(as_sample(eval_photos[2]))] == ["class0/002.png"] * len(
        index.lookup(as_sample(eval_photos[2])))
    found = index.lookup(as_sample(jpeg(eval_photos[5])), "A dog chasing a red ball!")
    # Found by its caption and by its picture (the square a center-crop resize keeps is a stored variant).
    assert {(m.eval_set, m.eval_id) for m in found} == {("coco", "42")}
    assert "caption_minhash" in {m.method for m in found} and {m.method for m in found} & {"phash", "crop_phash"}


@pytest.mark.parametrize("args, message", [
    (["--eval-set", "noequals", "--output", "x.idx"], "expected NAME=PATH"),
    (["--eval-set", "a=/nonexistent/dir", "--output", "x.idx"], "does not exist"),
    (["--output", "x.idx"], ""),
])
def test_eval_index_command_bad_input_exits_2(tmp_path, args, message, capsys):
    assert openwit(["eval-index", *args]) == 2
    assert message in capsys.readouterr().err


def test_eval_set_of_only_broken_images_is_an_error(tmp_path, capsys):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "a.jpg").write_bytes(b"not a jpeg")
    assert openwit(["eval-index", "--eval-set", f"s={tmp_path / 'set'}", "--output", str(tmp_path / "i")]) == 2
    assert "no usable image" in capsys.readouterr().err


def test_overlap_rows_follow_the_schema():
    matches = [OverlapMatch("coco", "42", "phash", 3.0, "thumb_ncc", 0.93),
               OverlapMatch("cifar", "a.png", "sha256", 0.0, "identical_pixels", 1.0)]
    table = overlap_table(overlap_rows(matches, "000010005", "http://127.0.0.1/x.jpg"))
    assert table.schema == OVERLAP_SCHEMA
    assert table.to_pylist() == [
        {"eval_set": "cifar", "eval_id": "a.png", "sample_key": "000010005", "url": "http://127.0.0.1/x.jpg",
         "method": "sha256", "distance": 0.0, "verification": "identical_pixels", "score": 1.0},
        {"eval_set": "coco", "eval_id": "42", "sample_key": "000010005", "url": "http://127.0.0.1/x.jpg",
         "method": "phash", "distance": 3.0, "verification": "thumb_ncc", "score": 0.93}]


def test_workers_build_the_same_index_as_one_process(monkeypatch):
    """A large eval set is decoded and hashed in worker processes; the index must not depend on how many."""
    import dedup.eval_index as eval_index
    monkeypatch.setattr(eval_index, "SIGNAL_BATCH", 16)  # a full round starts the pool without 256 images
    small = [photo(i).resize((48, 40)) for i in range(20)]
    items = [EvalItem(f"i{i}", png(im)) for i, im in enumerate(small)]
    items.insert(5, EvalItem("broken", b"not an image"))
    items.insert(9, EvalItem("unread", None, error="truncated tar member"))
    one, report_one = EvalIndex.build([("s", items)], workers=1)
    many, report_many = EvalIndex.build([("s", items)], workers=2)
    assert report_many.rejected == report_one.rejected and sum(report_one.rejected["s"].values()) == 2
    assert report_many.items == report_one.items == {"s": 20}
    for name in ("item_ids", "item_sha", "codes", "code_item", "code_method", "thumbs", "thumb_shapes", "signatures",
                 "aspects"):
        assert np.array_equal(np.asarray(getattr(many, name)), np.asarray(getattr(one, name))), name
