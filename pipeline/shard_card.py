"""One shard's share of the dataset card: the `card` field of `shards/NNNNN_stats.json`.

The shard writer computes it from the rows it already holds (one vectorised pass at shard end), so the card of
a 400M-sample build merges 40k small JSONs instead of streaming 40k parquets. `openwit report` on an older
build, whose _stats.json has no `card`, computes the same thing from the shard's parquet with this same
function: the card comes out identical either way. Every field is bounded, whatever the shard's size.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openwit.hashing import stable_hash64

# Image sides and caption lengths are binned on fixed edges, so per-shard histograms simply add up.
SIDE_EDGES = [0] + [2 ** i for i in range(3, 15)] + [2 ** 31]
CAPTION_EDGES = list(range(0, 510, 10)) + [2 ** 31]
SIDES = ("width", "height", "original_width", "original_height")
# The host of an http(s) URL, as pyarrow's regex kernel extracts it (no per-row Python per host).
HOST_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^:/?#]*)"
# Hosts kept per shard, the rest summed as "other". Shards are grouped by host, so a shard holds few hosts
# and the ones past this cap are small.
SHARD_HOSTS = 64
# Thumbnail candidates per shard: its kept samples with the lowest stable hash of their key. The card picks,
# per stratum of queries, the candidate with the lowest hash over all shards.
THUMBNAIL_CANDIDATES = 32
COLUMNS = ["key", "url", "caption", "status", "queries", *SIDES]


def summarize(table: pa.Table) -> dict:
    """The card's counts of one shard's rows (its parquet's columns in COLUMNS, in any order)."""
    ok = pc.equal(table.column("status"), "success").combine_chunks()
    good = table.filter(ok)
    sides = {}
    for name in SIDES:
        # Original sizes of every decoded image; written sizes of the samples written (an eval duplicate
        # dropped by decontamination was resized, but never written).
        values = (table if name.startswith("original_") else good).column(name).drop_null()
        sides[name] = np.histogram(values.to_numpy(), SIDE_EDGES)[0].tolist()
    chars = pc.utf8_length(good.column("caption")).to_numpy()
    return {
        "sides": sides,
        "caption_chars": np.histogram(chars, CAPTION_EDGES)[0].tolist(),
        **_hosts(table.column("url"), pc.invert(ok)),
        "thumbnails": _thumbnail_candidates(good),
    }


def _hosts(urls: pa.ChunkedArray, failed: pa.Array) -> dict:
    """[[host, attempted, failed], ...] of the shard's largest hosts, and [attempted, failed] of the rest."""
    hosts = pc.utf8_lower(pc.struct_field(pc.extract_regex(urls.combine_chunks(), HOST_PATTERN), "host"))
    hosts = hosts.fill_null("(no host)")
    counts = {}
    for slot, column in enumerate((hosts, hosts.filter(failed))):
        for entry in pc.value_counts(column).to_pylist():
            counts.setdefault(entry["values"], [0, 0])[slot] += entry["counts"]
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))
    rest = [sum(c[0] for _, c in ranked[SHARD_HOSTS:]), sum(c[1] for _, c in ranked[SHARD_HOSTS:])]
    return {"hosts": [[h, a, f] for h, (a, f) in ranked[:SHARD_HOSTS]], "hosts_other": rest}


def _thumbnail_candidates(good: pa.Table) -> list[dict]:
    keys = good.column("key").to_pylist()
    ranks = [stable_hash64("thumbnail", key) for key in keys]
    picked = sorted(range(len(keys)), key=lambda i: (ranks[i], keys[i]))[:THUMBNAIL_CANDIDATES]
    rows = good.take(pa.array(picked, pa.int64())).select(["key", "caption", "url", "queries"]).to_pylist()
    # The rank as a string: JSON readers outside Python lose precision on integers above 2^53.
    return [{**row, "rank": str(ranks[i])} for i, row in zip(picked, rows)]
