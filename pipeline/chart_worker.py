"""The dataset card's charts drawn in a process of their own, started when a build starts.

A local build ends with its report (pipeline/report.py): matplotlib's import (~0.4-0.8 s) and seven charts
(~1 s), then the language sample (lingua, ~0.6 s at 10k samples) and the thumbnails, one after the other in
the launcher, while the machine's other cores idle. `ChartProcess` starts a plain Python process that imports
matplotlib while the pipeline is built and runs (its start-up runs beside the launcher's own, which uses one
core), then draws the charts the report asks for while the launcher detects the languages and cuts the
thumbnails. The charts are the same functions (pipeline/charts.py) with the same arguments, JSON being how
aggregates.json carries them anyway, so the card is byte for byte the one drawn in the launcher
(tests/test_report.py). Anything wrong with the process (it could not start, died, answered nonsense) and
the report draws that chart itself, as before.

This module imports nothing heavy: the launcher imports it, the drawing process imports pipeline.charts.
"""

import json
import os
import subprocess
import sys
import threading

CHARTS = ("funnel", "rejects", "query_distribution", "caption_lengths", "languages", "image_sides", "hosts")


class ChartProcess:
    """A drawing process. `submit(name, *args)` queues a chart; `result(name)` is its SVG data URI, or None when
    the process could not draw it (the caller then draws it itself). Use as a context manager, or close()."""

    def __init__(self):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        # This checkout's pipeline package, whatever the working directory holds (-c puts that on sys.path too).
        # Ctrl-C reaches the whole process group: the launcher handles it, and closing our stdin ends us.
        # Done, it leaves at once: tearing matplotlib's interpreter down is ~0.2 s the launcher would wait for.
        code = (f"import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); sys.path.insert(0, {root!r}); "
                "from pipeline.chart_worker import serve; serve(); os._exit(0)")
        self._results: dict[str, str | None] = {}
        self._ready = threading.Condition()
        self._dead = False
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, close_fds=True)
        except OSError:
            self._proc = None
            self._dead = True
            return
        # Answers are read as they come: an SVG is 50-200 KB, more than a pipe holds, and the launcher has
        # other work (the language sample) while the charts are drawn.
        self._reader = threading.Thread(target=self._read, name="openwit-charts", daemon=True)
        self._reader.start()

    def _read(self):
        try:
            for line in self._proc.stdout:
                name, uri = json.loads(line)
                with self._ready:
                    self._results[name] = uri
                    self._ready.notify_all()
        except Exception:  # a garbled answer: what is missing gets drawn by the caller
            pass
        with self._ready:
            self._dead = True
            self._ready.notify_all()

    def submit(self, name: str, *args) -> None:
        if name not in CHARTS:
            raise ValueError(f"no chart {name!r}")
        if self._dead:
            return
        try:
            self._proc.stdin.write(json.dumps([name, args]).encode() + b"\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):  # the process is gone: result() says None
            with self._ready:
                self._dead = True

    def result(self, name: str) -> str | None:
        with self._ready:
            self._ready.wait_for(lambda: name in self._results or self._dead)
            return self._results.get(name)

    def stop(self) -> None:
        """No more charts: the process exits (its answers so far stay readable) while the caller goes on."""
        if self._proc is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    def close(self) -> None:
        if self._proc is None:
            return
        self.stop()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join()
        self._proc.stdout.close()
        self._proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve(stdin=None, stdout=None) -> None:
    """The drawing process: one JSON request [name, args] a line in, one JSON answer [name, uri] a line out
    (uri null when drawing failed: the launcher then draws it, and meets the error itself)."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    from pipeline import charts  # matplotlib: the import this process is for

    for line in stdin:
        name, args = json.loads(line)
        try:
            uri = getattr(charts, name)(*args)
        except Exception:
            uri = None
        stdout.write(json.dumps([name, uri]).encode() + b"\n")
        stdout.flush()
