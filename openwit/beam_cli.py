"""`beam run PIPELINE_FILE [options]`: run a Beam pipeline file, the way users launch Beam pipelines.

The file runs as `__main__` with the options that follow as its command line, so
`beam run pipeline/build_wit.py --runner DataflowRunner --project ...` behaves exactly like
`python pipeline/build_wit.py ...`, with the project importable from any working directory.
"""

import os
import runpy
import sys

from openwit.errors import EXIT_BAD_INPUT

USAGE = "usage: beam run PIPELINE_FILE [pipeline options...]"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] != "run":
        print(USAGE, file=sys.stderr)
        return EXIT_BAD_INPUT if argv[:1] not in (["-h"], ["--help"]) else 0
    path = argv[1]
    if not os.path.isfile(path):
        print(f"beam run: no pipeline file {path!r}; give the path of a .py file such as pipeline/build_wit.py",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.argv = [path, *argv[2:]]
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
