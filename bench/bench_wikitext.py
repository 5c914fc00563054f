"""Markup stripping on large malformed pages: time against page length, new strip_markup vs the previous one.

    .venv/bin/python bench/bench_wikitext.py [--sizes 25000,100000,400000] [--runs 3] [--old-commit 5f5a029]

Each page repeats one malformed unit (an unclosed <ref>, `<a` without `>`, `[http://` without `]`, a line of
`=`...) up to the size. Linear time means the growth between the two largest sizes is about their ratio;
the previous version (loaded from git at --old-commit, the peer) scanned from every opener to the end of the
page. The old version runs only up to --old-max-size: its quadratic cases take minutes beyond.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from queries.wikitext import strip_markup  # noqa: E402

UNITS = {
    "unclosed <ref>": "<ref>x ", "<ref attrs, no >": "<ref name=a ", "<a, no >": "<a b ",
    "[http:// no ]": "[http://x y ", "line of =": "=", "= and spaces": "= ", "[[a|": "[[a|", "{{a": "{{a ",
    "<!-- open": "<!-- x ", "closers": "}}|}]]", "real-ish article": "'''Paris''' is [[France|the]] {{x|y}} "
    "<ref>c</ref> [http://a.example b]\n== H ==\n* item\n",
}


def old_strip_markup(commit: str):
    source = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:queries/wikitext.py"], check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("old_wikitext")
    exec(compile(source, "old_wikitext.py", "exec"), module.__dict__)
    return module.strip_markup


def median_time(fn, page: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn(page)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="25000,100000,400000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--old-commit", default="5f5a029")
    ap.add_argument("--old-max-size", type=int, default=10000)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    old = old_strip_markup(args.old_commit)
    print("| page of | " + " | ".join(f"new {s // 1000}k ms" for s in sizes)
          + f" | growth x{sizes[-1] // sizes[-2]} size | old {args.old_max_size // 1000}k ms | speed-up at "
          f"{args.old_max_size // 1000}k |")
    print("|---" * (len(sizes) + 4) + "|")
    for name, unit in UNITS.items():
        new_ms = [1000 * median_time(strip_markup, unit * (s // len(unit)), args.runs) for s in sizes]
        page = unit * (args.old_max_size // len(unit))
        old_ms = 1000 * median_time(old, page, args.runs)
        new_small = 1000 * median_time(strip_markup, page, args.runs)
        print(f"| {name} | " + " | ".join(f"{t:.1f}" for t in new_ms)
              + f" | {new_ms[-1] / max(new_ms[-2], 1e-3):.1f} | {old_ms:.1f} | {old_ms / max(new_small, 1e-3):.0f}x |",
              flush=True)


if __name__ == "__main__":
    main()
