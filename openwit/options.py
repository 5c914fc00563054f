"""Beam options shared by OpenWIT's pipelines, and how their command lines are parsed.

Beam parses every PipelineOptions subclass that has been imported with one global parser, so two pipelines
that each declare `--output` collide ("conflicting option string") as soon as one process imports both (a test
session, a notebook, a launcher). Flags common to several pipelines are therefore declared once, here.

A pipeline's options class names PipelineOptions as a direct base too, `class X(OutputOptions,
PipelineOptions)`: when a pipeline runs, Beam re-checks the command line against the *direct* subclasses of
PipelineOptions only, and would log every option of a grandchild class as "Unparseable argument".
"""

import argparse
import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from openwit.errors import InputError

# Local and offline: Beam's DirectRunner first tries to download its Prism binary from GitHub.
DEFAULT_RUNNER = "FnApiRunner"


class OutputOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--output", help="output folder (local, gs://, s3://, hdfs://)")

    def view_as(self, cls):
        """Beam's view_as, made once per class: Beam builds an argparse parser of the class's options and parses
        the whole command line again for every view, and constructing a pipeline asks ours for a TypeOptions view
        ~25 times per transform (~740 views, ~0.6 s of a build's start-up). A view holds no state of its own:
        every view of an options object reads and writes the object's one `_all_options` dict."""
        views = self.__dict__.setdefault("_views", {})
        view = views.get(cls)
        if view is None or view._all_options is not self._all_options:
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self):
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k != "_views"}  # a cache, and Beam's hook edits only its own


def help_parser(options_cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with just this pipeline's own options, for --help and for spotting typos."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, allow_abbrev=False,
        epilog="Any Beam pipeline option (--runner, --direct_num_workers, --project, ...) is accepted too. "
               f"With no --runner the pipeline runs locally on {DEFAULT_RUNNER}.")
    for cls in reversed(options_cls.mro()):
        if "_add_argparse_args" in vars(cls) and issubclass(cls, OutputOptions):
            cls._add_argparse_args(parser)
    return parser


def beam_parser() -> argparse.ArgumentParser:
    """Every option Beam itself knows (--runner, --project, --experiments, ...), for telling them from typos.

    Beam's own parse keeps only what some imported PipelineOptions subclass declares and drops the rest with a
    warning; collecting the same declarations here lets us refuse the rest instead."""
    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    seen, todo = set(), [PipelineOptions]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    for cls in seen:
        if "_add_argparse_args" in vars(cls) and not issubclass(cls, OutputOptions):
            try:
                cls._add_argparse_args(parser)
            except argparse.ArgumentError:  # two classes declaring one flag: Beam's own parse tolerates it
                pass
    return parser


def parse_pipeline_options(argv: list[str], options_cls: type, prog: str) -> PipelineOptions:
    """Beam options from a command line, as a view of `options_cls`, with the local runner by default.

    Beam silently drops options it does not know, so a typo (`--timout 5`), a stray `-x` or a stray positional
    argument would run with defaults: anything that is neither ours nor Beam's stops the run instead.
    """
    _, unknown = help_parser(options_cls, prog, "").parse_known_args(argv)
    _, unknown = beam_parser().parse_known_args(unknown)
    if unknown:
        arg = unknown[0]
        what = f"unknown option {arg.split('=')[0]}" if arg.startswith("-") else f"unexpected argument {arg!r}"
        raise InputError(f"{what}; see `{prog} --help` (Beam's own options are spelled --like_this)")
    options = PipelineOptions(argv)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    return options.view_as(options_cls)


# A build worker keeps about this many cores busy on its own: its event loop fetches, its sample processes (a
# thread pool with --sample-processes 0) decode, resize, encode and hash. Each worker process costs ~4 CPU-s to
# start (Beam + the pipeline imported), so on 2 cores one in-process worker was faster and cheaper end to end
# (bench/RESULTS.md).
CORES_PER_WORKER = 2


def default_workers(cores: int) -> int:
    return max(1, -(-cores // CORES_PER_WORKER))


def use_every_core(options: PipelineOptions, argv: list[str]) -> None:
    """Locally, one worker process per CORES_PER_WORKER cores unless --direct_num_workers says otherwise (1: all
    in this process; each worker also runs a thread per core, and one more)."""
    def given(name):
        return any(arg == name or arg.startswith(name + "=") for arg in argv)

    if options.view_as(StandardOptions).runner != DEFAULT_RUNNER:
        return
    direct = options.view_as(DirectOptions)
    if not given("--direct_num_workers"):
        direct.direct_num_workers = default_workers(os.cpu_count() or 1)
    if direct.direct_num_workers != 1 and not given("--direct_running_mode"):
        direct.direct_running_mode = "multi_processing"


def default_sample_processes(options: PipelineOptions) -> int:
    """Sample processes per worker (pipeline/sample_processes.py): locally, one per core, shared among the
    workers; none on other runners, whose SDK workers already run a process per vCPU."""
    if options.view_as(StandardOptions).runner != DEFAULT_RUNNER:
        return 0
    cores = os.cpu_count() or 1
    return max(1, cores // (options.view_as(DirectOptions).direct_num_workers or cores))


def local_run_summary(options: PipelineOptions) -> str | None:
    """One line saying how a local build uses the machine (None on other runners)."""
    if options.view_as(StandardOptions).runner != DEFAULT_RUNNER:
        return None
    direct = options.view_as(DirectOptions)
    workers = direct.direct_num_workers or os.cpu_count() or 1
    kind = "threads" if direct.direct_running_mode == "multi_threading" else "processes"
    where = "this process" if workers == 1 else f"{workers} worker {kind}"
    return (f"running locally on {DEFAULT_RUNNER} in {where} "
            f"({os.cpu_count()} cores; --direct_num_workers=N to change), {options.sample_processes} sample "
            "processes per worker (--sample-processes=N to change)")
