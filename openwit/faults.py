"""Injected failures, for the tests that show retries and reruns give the same dataset as an undisturbed run.

Off unless OPENWIT_FAULTS is set: a comma-separated list of `point@n`, each failing the n-th time `point` is
reached in a process, once per OPENWIT_FAULTS_DIR (a marker file there records that it fired, so a retried
bundle, another worker process or a rerun passes). Points: `shard` (after the n-th sample of a shard is written
into its tar, mid-shard) and `match` (at the n-th batch of captions of the match stage).
"""

import os
from collections import Counter

_reached = Counter()


class InjectedFault(RuntimeError):
    """A failure a test asked for; never raised unless OPENWIT_FAULTS names its point."""


def _armed(spec: str) -> dict[str, int]:
    return {point: int(n) for point, _, n in (item.partition("@") for item in spec.split(",") if item)}


def maybe_fail(point: str) -> None:
    spec = os.environ.get("OPENWIT_FAULTS")
    if not spec:
        return
    armed = _armed(spec)
    if point not in armed:
        return
    folder = os.environ.get("OPENWIT_FAULTS_DIR", ".")
    _reached[folder, point] += 1
    if _reached[folder, point] != armed[point]:
        return
    marker = os.path.join(folder, f"fired-{point}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # atomic: only one process fires it
    except FileExistsError:
        return
    raise InjectedFault(f"injected fault at {point} (call {armed[point]}, OPENWIT_FAULTS)")
