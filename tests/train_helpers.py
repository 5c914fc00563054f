"""Small shards in OpenWIT's format for the training tests, written in a blink: synthetic images whose
caption names their colour (something a tiny CLIP can learn in a few steps), a tar laid out as
pipeline/write_shards.py writes it, the shard parquet with its `queries` column, and sizes.json."""

import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from pipeline.write_shards import PARQUET_SCHEMA, TarWriter

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
           "black": (10, 10, 10), "white": (245, 245, 245), "purple": (140, 30, 160), "orange": (250, 140, 20)}


def jpeg(colour, size, index) -> bytes:
    img = Image.new("RGB", (size + index % 7, size), COLOURS[colour])
    img.putpixel((index % size, 0), (index % 256, 0, 0))  # distinct bytes per sample
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def query_ids(index: int, n_queries: int) -> list[int]:
    """A skewed query distribution: query 0 matches 3 samples in 4, as a frequent word would; the rest share
    the other queries, and every 8th sample also matches query 0."""
    if index % 4:
        return [0]
    rare = 1 + (index // 4) % (n_queries - 1)
    return [0, rare] if index % 8 == 0 else [rare]


def make_shards(folder, n_shards=4, per_shard=12, image_size=32, n_queries=6, corrupt=()) -> str:
    """Writes OUT/shards/{00000..}.tar/.parquet + sizes.json under `folder`; returns the brace pattern of
    the tars. `corrupt`: global indices whose image bytes are garbage (a broken JPEG in the tar)."""
    shards = os.path.join(folder, "shards")
    os.makedirs(shards, exist_ok=True)
    names = list(COLOURS)
    sizes = {}
    for shard in range(n_shards):
        rows = []
        with open(os.path.join(shards, f"{shard:05d}.tar"), "wb") as f:
            tar = TarWriter(f)
            for i in range(per_shard):
                index = shard * per_shard + i
                key = f"{shard:05d}{i:04d}"
                colour = names[index % len(names)]
                caption = f"a photo of something {colour}"
                data = b"not a jpeg" * 5 if index in corrupt else jpeg(colour, image_size, index)
                queries = query_ids(index, n_queries)
                meta = {"key": key, "caption": caption, "queries": queries}
                for ext, payload in (("jpg", data), ("txt", caption.encode()), ("json", json.dumps(meta).encode())):
                    tar.add(f"{key}.{ext}", payload)
                rows.append({"key": key, "url": f"http://x/{index}.jpg", "caption": caption, "status": "success",
                             "error_message": None, "width": image_size, "height": image_size,
                             "original_width": image_size, "original_height": image_size, "sha256": None,
                             "phash": None, "queries": queries, "page_url": "", "eval_matches": []})
            tar.close()
        pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA), os.path.join(shards, f"{shard:05d}.parquet"))
        sizes[f"{shard:05d}.tar"] = per_shard
    for where in (folder, shards):
        with open(os.path.join(where, "sizes.json"), "w") as f:
            json.dump(sizes, f)
    return os.path.join(shards, "{%05d..%05d}.tar" % (0, n_shards - 1))


class WordTokenizer:
    """A stand-in tokenizer for loader tests (picklable, no BPE): word hashes, fixed length."""

    def __init__(self, context_length=8):
        self.context_length = context_length

    def __call__(self, texts):
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [sum(map(ord, w)) % 1000 + 1 for w in text.split()][: self.context_length]
            out[i, : len(ids)] = torch.tensor(ids)
        return out
