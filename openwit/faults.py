"""Injected failures, for the tests that show retries and reruns give the same dataset as an undisturbed run.

Off unless OPENWIT_FAULTS is set: a comma-separated list of `point@n`, each failing the n-th time `point` is
reached in a process, once per OPENWIT_FAULTS_DIR (a marker file there records that it fired, so a retried
bundle, another worker process or a rerun passes). Points: `shard` (after the n-th sample of a shard is written
into its tar, mid-shard), `match` (at the n-th batch of captions of the match stage) and `sample_process` (a
sample process killed by SIGKILL as it starts its n-th sample, as a crash in a decoder would end it).
"""

import os
import signal
from collections import Counter

_reached = Counter()


class InjectedFault(RuntimeError):
    """A failure a test asked for; never raised unless OPENWIT_FAULTS names its point."""


def _armed(spec: str) -> dict[str, int]:
    return {point: int(n) for point, _, n in (item.partition("@") for item in spec.split(",") if item)}


def _fires(point: str) -> int | None:
    """The call number at which `point` fires, if this call is it (and no process has fired it yet)."""
    spec = os.environ.get("OPENWIT_FAULTS")
    if not spec:
        return None
    armed = _armed(spec)
    if point not in armed:
        return None
    folder = os.environ.get("OPENWIT_FAULTS_DIR", ".")
    _reached[folder, point] += 1
    if _reached[folder, point] != armed[point]:
        return None
    marker = os.path.join(folder, f"fired-{point}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # atomic: only one process fires it
    except FileExistsError:
        return None
    return armed[point]


def maybe_fail(point: str) -> None:
    if (n := _fires(point)) is not None:
        raise InjectedFault(f"injected fault at {point} (call {n}, OPENWIT_FAULTS)")


def maybe_crash(point: str) -> None:
    if _fires(point) is not None:
        os.kill(os.getpid(), signal.SIGKILL)
