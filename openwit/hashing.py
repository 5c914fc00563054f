"""Stable hashes: every key, sample and shard choice derives from these, never from `random` or time,
so a rerun over the same input gives the same dataset on any runner and any worker."""

import hashlib


def stable_hash64(*parts: object) -> int:
    """A 64-bit hash of the parts' string forms, the same in every process and Python version."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")  # unit separator, so ("ab", "c") and ("a", "bc") differ
    return int.from_bytes(h.digest(), "big")


def stable_uniform(*parts: object) -> float:
    """A number in [0, 1) that is uniform over inputs and fixed for each input."""
    return stable_hash64(*parts) / 2**64
