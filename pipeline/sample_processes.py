"""Sample processes: a worker's CPU work per sample (decode, resize, encode, hash, eval lookup) done in child
processes that its event loop feeds over pipes.

Why: in one process the decode threads and the fetch loop share one interpreter lock. Pillow releases it while
it decodes, resizes and encodes, but the Python around each call holds it, and a worker kept only ~1.7 of 2
cores busy (bench/RESULTS.md, speed pass 4). A child has an interpreter of its own, and the worker's process
is left with fetching and writing. Nothing sits between the event loop and the pipes: a ProcessPoolExecutor's
feeder and result threads cost more CPU than the processes saved (bench/RESULTS.md, speed pass 6).

A child is a fresh interpreter (`python -m pipeline.sample_processes`, importing pipeline.samples, not Beam),
never a fork of a threaded worker. One that dies (a crash in an image decoder, the kernel's memory killer) costs
only the sample it was working on, rejected as `decoder_crashed`; the samples queued behind it go to its
replacement.

Protocol, one pipe each way: every message is an 8-byte little-endian length, then a pickle. The worker sends
the SampleMaker's arguments, the child answers an empty message once it is ready; then (candidate, FetchResult)
one way and (row, files) back, in order.
"""

import asyncio
import collections
import fcntl
import gc
import os
import pickle
import signal
import sys

import pipeline
from openwit import faults
from pipeline import samples

DECODER_CRASHED = "decoder_crashed"
LENGTH = 8
QUEUED_PER_PROCESS = 4  # samples sent ahead to each child: it never waits for work, few are resent after a crash
# A pipe holds 64 KiB by default, half a typical image: the child could not read one whole sample without the
# worker's loop coming back to write the rest, and starved meanwhile (children ~55% busy). Linux lets an
# unprivileged process raise it to /proc/sys/fs/pipe-max-size (1 MiB by default).
PIPE_BYTES = 1 << 20


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(LENGTH, "little") + payload


class _Child:
    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.pending = collections.deque()  # (future, candidate, message) in the order sent
        self.reader: asyncio.Task | None = None

    def send(self, future: asyncio.Future, candidate: dict, message: bytes) -> None:
        self.pending.append((future, candidate, message))
        self.process.stdin.write(_frame(message))


class SampleProcesses:
    """`count` children making samples; `await sample(candidate, result)` from the event loop that started them."""

    def __init__(self, count: int, maker_args: tuple):
        self.count, self.maker_args = count, pickle.dumps(maker_args)
        self.slots = asyncio.Semaphore(count * QUEUED_PER_PROCESS)  # binds to the loop that first waits on it
        self.children: list[_Child] = []
        self.closing = False
        self.broken: BaseException | None = None

    async def start(self) -> None:
        """Start the children; they import and get ready while the worker fetches its first samples."""
        self.children = [await self._spawn() for _ in range(self.count)]

    async def sample(self, candidate: dict, result) -> tuple[dict, list]:
        message = pickle.dumps((candidate, result), protocol=pickle.HIGHEST_PROTOCOL)
        async with self.slots:
            if self.broken:
                raise self.broken
            future = asyncio.get_running_loop().create_future()
            min(self.children, key=lambda c: len(c.pending)).send(future, candidate, message)
            return await future

    async def close(self) -> None:
        self.closing = True
        for child in self.children:
            child.process.stdin.close()
        for child in self.children:
            await child.process.wait()
            await child.reader

    async def _spawn(self) -> _Child:
        # -P and the parent's own tree first on the path: the child runs this very code, whatever the cwd holds.
        root = os.path.dirname(os.path.dirname(os.path.abspath(pipeline.__file__)))
        path = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "pipeline.sample_processes", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=dict(os.environ, PYTHONPATH=path))
        process.stdin.write(_frame(self.maker_args))
        child = _Child(process)
        child.reader = asyncio.create_task(self._read_replies(child))
        return child

    async def _read_replies(self, child: _Child) -> None:
        stdout = child.process.stdout
        if await _read_async(stdout) != b"":  # it could not make its SampleMaker: no child will
            await child.process.wait()
            self.broken = RuntimeError(f"a sample process exited with status {child.process.returncode} before "
                                       "it was ready (its error is above)")
            for future, _, _ in child.pending:
                future.set_exception(self.broken)
            return
        while (reply := await _read_async(stdout)) is not None:
            future = child.pending.popleft()[0]
            future.set_result(pickle.loads(reply))
        await child.process.wait()
        if self.closing:
            return
        replacement = await self._spawn()
        self.children[self.children.index(child)] = replacement
        if child.pending:
            # The child works through its samples in order: the first unanswered one killed it.
            future, candidate, _ = child.pending.popleft()
            future.set_result((samples.failed_row(candidate, DECODER_CRASHED,
                                                  f"the sample process died (exit status {child.process.returncode})"
                                                  " while making this sample"), []))
        for future, candidate, message in child.pending:
            replacement.send(future, candidate, message)


def _widen(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (AttributeError, OSError):  # not Linux, or a lower limit: the default size works, only slower
        pass


async def _read_async(stream: asyncio.StreamReader) -> bytes | None:
    try:
        length = int.from_bytes(await stream.readexactly(LENGTH), "little")
        return await stream.readexactly(length)
    except asyncio.IncompleteReadError:
        return None


def _read(stream) -> bytes | None:
    header = stream.read(LENGTH)
    if len(header) < LENGTH:
        return None
    payload = stream.read(int.from_bytes(header, "little"))
    return payload if len(payload) == int.from_bytes(header, "little") else None


def main() -> None:
    """A child: make samples until the worker closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle; it closes our pipe
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a library's print() goes to stderr, never into a reply
    requests = sys.stdin.buffer
    for fd in (requests.fileno(), replies.fileno()):  # the pipes' size is theirs: either end may set it
        _widen(fd)
    if (maker_args := _read(requests)) is None:  # the worker closed at once
        return
    maker = samples.SampleMaker(*pickle.loads(maker_args))
    gc.freeze()  # as in the worker (pipeline/write_shards.py, WriteShardFn.setup)
    gc.set_threshold(20_000)
    replies.write(_frame(b""))
    replies.flush()
    while (message := _read(requests)) is not None:
        candidate, result = pickle.loads(message)
        faults.maybe_crash("sample_process")
        replies.write(_frame(pickle.dumps(maker.sample(candidate, result), protocol=pickle.HIGHEST_PROTOCOL)))
        replies.flush()


if __name__ == "__main__":
    main()
