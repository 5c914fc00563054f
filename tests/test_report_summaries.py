"""The card of a real build comes from the shards' `_stats.json` summaries, never from streaming every shard
parquet, and is the same as the card an older build (no summaries) gets by scanning its parquets."""

import glob
import json
import os
import shutil

from pipeline import aggregates, report, shard_card


def _copy(build, to):
    shutil.copytree(build, to)
    return str(to)


def test_card_from_summaries_equals_card_from_parquets(demo_build, tmp_path, monkeypatch):
    # One shard's captions make the language sample, so every other shard parquet can be broken below.
    monkeypatch.setattr(aggregates, "LANGUAGE_SHARDS", 1)
    with_summaries = _copy(demo_build, tmp_path / "new")
    stats_files = sorted(glob.glob(os.path.join(with_summaries, "shards", "*_stats.json")))
    assert len(stats_files) >= 2
    for path in stats_files:
        card = json.load(open(path))["card"]
        assert len(card["hosts"]) <= shard_card.SHARD_HOSTS
        assert len(card["thumbnails"]) <= shard_card.THUMBNAIL_CANDIDATES

    # An older build: the same shards, with _stats.json that hold no card.
    older = _copy(demo_build, tmp_path / "old")
    for path in glob.glob(os.path.join(older, "shards", "*_stats.json")):
        stats = json.load(open(path))
        del stats["card"]
        with open(path, "w") as f:
            json.dump(stats, f)
    scanned = report.write_report(older, t=20)
    summed = report.write_report(with_summaries, t=20)
    assert summed == scanned
    assert summed["thumbnails"] and summed["hosts"]["top"] and sum(summed["caption_chars"]["counts"]) > 0
    assert open(os.path.join(with_summaries, "report.html"), "rb").read() == \
        open(os.path.join(older, "report.html"), "rb").read()

    # With summaries, the shard parquets are not read (but the language sample's one): breaking them all
    # leaves the card as it was.
    shards = sorted(glob.glob(os.path.join(with_summaries, "shards", "*.parquet")))
    sampled = shards[0]
    for path in shards:
        if path != sampled:
            with open(path, "wb") as f:
                f.write(b"not a parquet")
    assert aggregates.compute(with_summaries, t=20) == summed
