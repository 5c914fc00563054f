"""`openwit`: one command for every job of the project.

Each subcommand is the `main(argv) -> int` of the module that owns the job, imported only when used, so
`openwit --help` stays fast and a job's heavy imports (Beam, torch) load only for that job.
"""

import importlib
import logging
import os
import sys

from openwit.errors import EXIT_BAD_INPUT, InputError

SUBCOMMANDS = {
    "build": ("pipeline.build_wit", "build the dataset: pairs + queries -> WebDataset/Parquet shards"),
    "demo": ("openwit.demo", "serve the offline demo web on 127.0.0.1 and build a dataset from it"),
    "demo-web": ("openwit.demo_web", "write the demo web to a folder and/or serve it on 127.0.0.1"),
    "queries": ("queries.build_queries", "build the query list from Wikipedia dumps, page views and WordNet"),
    "eval-index": ("dedup.build_index", "build a near-duplicate index of evaluation sets"),
    "report": ("pipeline.report", "(re)write the dataset card OUT/report.html from a build's output folder"),
    "train": ("training.train", "train CLIP on the shards (one process, or torchrun for DDP)"),
    "overlap": ("dedup.overlap_report", "the CLIP paper's overlap report: accuracy on Overlap vs Clean items"),
    "zeroshot": ("training.zeroshot", "zero-shot classification and retrieval of a CLIP checkpoint on eval sets"),
    "experiment": ("openwit.experiment", "offline miniature of the CLIP paper: build, train, zero-shot, overlap"),
    "linear-probe": ("training.linear_probe", "logistic regression on frozen CLIP features (and few-shot probes)"),
}


def _usage() -> str:
    lines = ["usage: openwit <command> [options]   (openwit <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<13} {summary}" for name, (_module, summary) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    program = argv is None  # the `openwit` command itself, not a call from Python
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else EXIT_BAD_INPUT
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"openwit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    module = importlib.import_module(SUBCOMMANDS[name][0])
    try:
        code = module.main(rest) or 0
    except InputError as e:
        print(f"openwit {name}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if program and name in EXIT_AT_ONCE:
        _exit_at_once(code)
    return code


# Commands whose process has nothing left to do once main returns: every output file is closed, every worker
# and thread pool stopped. Run as a program (not main([...]) from Python), they skip the interpreter's
# teardown: ~0.5 s of a build (freeing Beam's, pyarrow's and our modules' objects, one by one).
EXIT_AT_ONCE = ("build",)


def _exit_at_once(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
