"""Eval-set decontamination inside the pipeline: eval images that also appear on the web are dropped from the
shards (or only reported), and every match lands in overlap/{eval_set}.parquet."""

import io
import os
import tarfile

import imagehash
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dedup import build_index, verify
from pipeline.samples import phash_of_written
from build_helpers import build, shard_files, shard_rows

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def eval_index(demo_site, tmp_path_factory):
    """An eval set (class folders) holding re-encoded, resized copies of five demo images that fetch fine."""
    folder = tmp_path_factory.mktemp("eval") / "pets"
    leaked = [p for p, outcome in demo_site.expected.items() if outcome == "success"][:5]
    for i, path in enumerate(leaked):
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        image = Image.open(io.BytesIO(demo_site.files[path][0])).convert("RGB")
        image.resize((image.width * 3 // 4, image.height * 3 // 4)).save(folder / f"class{i % 2}" / f"{i}.jpg",
                                                                           quality=80)
    index = str(folder.parent / "eval.idx")
    assert build_index.main(["--eval-set", f"pets={folder}", "--output", index]) == 0
    return index, leaked


def overlap(output):
    return pq.read_table(os.path.join(output, "overlap", "pets.parquet")).to_pylist()


def test_drop_removes_eval_images_and_records_each_match(demo_inputs, demo_url, eval_index, tmp_path):
    index, leaked = eval_index
    output = build(*demo_inputs, tmp_path / "drop", "--eval-index", index)
    rows = {r["url"]: r for r in shard_rows(output)}
    leaked_urls = {demo_url + p for p in leaked}
    attempted = leaked_urls & set(rows)  # some may have been rejected earlier for their caption
    assert attempted
    for url in attempted:
        assert rows[url]["status"] == "failed" and rows[url]["error_message"] == "eval_duplicate"
    matches = overlap(output)
    assert {m["url"] for m in matches} == attempted
    assert all(m["eval_set"] == "pets" and m["sample_key"] == rows[m["url"]]["key"] for m in matches)
    others = [r for url, r in rows.items() if url not in leaked_urls]
    assert not any(r["error_message"] == "eval_duplicate" for r in others)  # no false positives here


def test_report_mode_keeps_the_samples_but_still_records_them(demo_inputs, demo_url, eval_index, tmp_path):
    index, leaked = eval_index
    output = build(*demo_inputs, tmp_path / "report", "--eval-index", index, "--decontaminate", "report")
    rows = {r["url"]: r for r in shard_rows(output)}
    attempted = {demo_url + p for p in leaked} & set(rows)
    assert all(rows[url]["status"] == "success" for url in attempted)
    assert {m["url"] for m in overlap(output)} == attempted
    # Each match says how it was confirmed; hash matches passed pixel verification.
    for m in overlap(output) + [m for url in attempted for m in rows[url]["eval_matches"]]:
        assert m["verification"] in ("identical_pixels", verify.METHOD, "jaccard") and 0 < m["score"] <= 1.0 + 1e-6
    # The pHash recorded is that of the image as written in the tar, not of the in-memory image: the same bits
    # from the file's bytes, and within a few bits of imagehash's pHash of the fully decoded file.
    members = {}
    for path in shard_files(output, "*.tar"):
        with tarfile.open(path) as tar:
            members.update({m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")})
    kept = [r for r in rows.values() if r["status"] == "success"]
    assert kept and all(r["phash"] == phash_of_written(members[r["key"] + ".jpg"]) for r in kept)
    full_decode = [imagehash.phash(Image.open(io.BytesIO(members[r["key"] + ".jpg"]))) for r in kept]
    assert all(full - imagehash.hex_to_hash(r["phash"]) <= 4 for full, r in zip(full_decode, kept))
