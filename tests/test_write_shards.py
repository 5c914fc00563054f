"""The shard step on its own: ordered streaming into the tar through a small window, and a sample whose
processing hits an unexpected error costs that sample only."""

import gc
import io
import tarfile

import imagehash
import pyarrow.parquet as pq
import pytest
from PIL import Image

from image_helpers import photo, png
from pipeline import fetch, resize, samples, write_shards
from pipeline.plan_shards import sample_key
from pipeline.write_shards import ShardBuilder, ShardConfig

pytestmark = pytest.mark.timeout(300)


def candidates(demo_site, demo_url, n):
    paths = [p for p, outcome in demo_site.expected.items()][:n]
    return [{"url": demo_url + p, "caption": f"caption {i}", "queries": [i % 3], "page_url": "",
             "source": "test", "index": i, "key": sample_key(7, i, 10000)} for i, p in enumerate(paths)]


def test_small_window_keeps_index_order_and_every_sample(demo_site, demo_url, tmp_path, monkeypatch):
    monkeypatch.setattr(write_shards, "WINDOW_MIN", 3)  # far smaller than the shard: forces waiting
    config = ShardConfig(output=str(tmp_path), image=resize.ImageOptions(image_size=32),
                         fetch=fetch.FetchOptions(allow_private_addresses=True, max_concurrency=1, timeout_s=10))
    items = candidates(demo_site, demo_url, 25)
    builder = ShardBuilder(config)
    try:
        summary = builder.build(7, list(reversed(items)))  # arrival order must not matter
    finally:
        builder.close()
    rows = pq.read_table(tmp_path / "shards" / "00007.parquet").to_pylist()
    assert [r["key"] for r in rows] == [c["key"] for c in items]
    with tarfile.open(tmp_path / "shards" / "00007.tar") as tar:
        keys = [m.name.split(".")[0] for m in tar.getmembers()]
    ok = [r["key"] for r in rows if r["status"] == "success"]
    assert keys == [k for k in ok for _ in range(3)] and summary["successes"] == len(ok) > 0


def test_unexpected_error_in_one_sample_is_counted_not_fatal(demo_site, demo_url, tmp_path, monkeypatch):
    items = candidates(demo_site, demo_url, 12)
    good = [c for c in items if demo_site.expected[c["url"][len(demo_url):]] == "success"]
    real = resize.process_image

    def flaky(data, options):
        if flaky.calls == 0:
            flaky.calls += 1
            raise RuntimeError("a bug")
        return real(data, options)
    flaky.calls = 0
    monkeypatch.setattr(resize, "process_image", flaky)
    config = ShardConfig(output=str(tmp_path), image=resize.ImageOptions(image_size=32), threads=1,
                         fetch=fetch.FetchOptions(allow_private_addresses=True, max_concurrency=1))
    builder = ShardBuilder(config)
    try:
        summary = builder.build(0, [dict(c, key=sample_key(0, c["index"], 10000)) for c in items])
    finally:
        builder.close()
    assert summary["failed"].get(samples.INTERNAL_ERROR) == 1
    assert summary["successes"] == len(good) - 1
    assert write_shards.stage_of(samples.INTERNAL_ERROR) == "shard"


def test_phash_of_written_reads_a_jpeg_at_quarter_scale_and_stays_close_to_imagehash():
    image = photo(3, (256, 256))
    as_png, as_jpeg = png(image), io.BytesIO()
    image.save(as_jpeg, "JPEG", quality=95)
    as_jpeg = as_jpeg.getvalue()
    assert samples.phash_of_written(as_png) == str(imagehash.phash(Image.open(io.BytesIO(as_png))))
    quarter = Image.open(io.BytesIO(as_jpeg))
    quarter.draft("L", (64, 64))
    assert quarter.size == (64, 64)  # libjpeg's scaled decode, luma only
    assert samples.phash_of_written(as_jpeg) == str(imagehash.phash(quarter))
    full = imagehash.phash(Image.open(io.BytesIO(as_jpeg)))
    assert full - imagehash.hex_to_hash(samples.phash_of_written(as_jpeg)) <= 4


def test_tar_writer_writes_what_tarfile_writes(tmp_path):
    members = [("a.jpg", b""), ("000000001.jpg", b"x" * 512), ("k" * 100, b"y" * 513), ("é.txt", "é".encode() * 999)]
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            tar.addfile(info, io.BytesIO(data))
    written = io.BytesIO()
    writer = write_shards.TarWriter(written)
    for name, data in members:
        writer.add(name, data)
    writer.close()
    assert written.getvalue() == expected.getvalue()
    with pytest.raises(ValueError):
        write_shards.tar_header("k" * 101, 1)


def test_shard_dofn_tunes_the_collector_for_its_run_and_restores_it(tmp_path):
    before = gc.get_threshold()
    fn = write_shards.WriteShardFn(ShardConfig(output=str(tmp_path), image=resize.ImageOptions(),
                                               fetch=fetch.FetchOptions()))
    fn.setup()
    try:
        assert gc.get_threshold()[0] == write_shards.GC_YOUNG_THRESHOLD and gc.get_freeze_count() > 0
    finally:
        fn.teardown()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


@pytest.mark.parametrize("size", [(256, 256), (256, 170), (170, 256), (256, 64), (100, 256), (63, 63), (1, 1),
                                  (3, 500), (512, 512)])
def test_phash_of_written_jpeg_is_phash_of_written_without_the_header_parse(size):
    # The shard writer's fast path decodes its own JPEGs with the decoder and scale Image.open + draft use.
    for seed in range(3):
        written = resize.process_image(png(photo(seed, size)), resize.ImageOptions(resize_mode="no")).data
        assert samples.phash_of_written_jpeg(written, size) == samples.phash_of_written(written)
    # A file cut short is not what the fast path expects: it falls back, and fails as phash_of_written fails.
    if size == (512, 512):
        with pytest.raises(OSError):
            samples.phash_of_written_jpeg(written[: len(written) // 2], size)
