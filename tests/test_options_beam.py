"""Our pipeline options against Beam's own: no shared name or dest, and JSON-safe values.

Beam parses the command line with one parser for every options class imported in the process, and sends the
options as JSON to portable runners (Flink, Spark, the job service). A dest shared with a Beam option silently
changes that option (`--user-agent` set SetupOptions.user_agent), and a non-JSON value (inf) fails the
submission."""

import argparse
import ast
import json
import os

import apache_beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import build_wit
from queries import build_queries

BEAM_ROOT = os.path.dirname(apache_beam.__file__)


def _dest(option_strings: list[str], dest: str | None) -> str:
    if dest:
        return dest
    longs = [s for s in option_strings if s.startswith("--")] or option_strings
    return longs[0].lstrip("-").replace("-", "_")


def beam_options() -> dict[tuple[str, str], set[str]]:
    """{(file, class): option strings and dests} of every Beam options class, read from Beam's sources.

    Read, not imported: some live in modules whose optional dependencies are not installed (DaskOptions needs
    dask, YamlOptions jinja2), and a user who installs them gets those options in the same parser as ours."""
    found = {}
    for folder, _dirs, files in os.walk(BEAM_ROOT):
        for name in files:
            path = os.path.join(folder, name)
            # Examples and test benchmarks are pipelines like ours, not options a user's runner brings along.
            if not name.endswith(".py") or name.endswith("_test.py") or "/examples/" in path or "/testing/" in path:
                continue
            with open(path, encoding="utf-8") as f:
                source = f.read()
            if "_add_argparse_args" not in source:
                continue
            for cls in ast.walk(ast.parse(source)):
                if not isinstance(cls, ast.ClassDef):
                    continue
                names = set()
                for call in ast.walk(cls):
                    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                            and call.func.attr in ("add_argument", "add_value_provider_argument")):
                        strings = [a.value for a in call.args if isinstance(a, ast.Constant) and
                                   isinstance(a.value, str) and a.value.startswith("-")]
                        dest = next((k.value.value for k in call.keywords
                                     if k.arg == "dest" and isinstance(k.value, ast.Constant)), None)
                        if strings or dest:
                            names.update(s.lstrip("-").replace("-", "_") for s in strings)
                            names.add(_dest(strings, dest))
                if names:
                    found[(os.path.relpath(path, BEAM_ROOT), cls.name)] = names
    return found


def our_options_classes() -> list[type]:
    modules = ("pipeline.", "queries.", "dedup.", "openwit.")
    seen, todo = [], list(PipelineOptions.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith(modules) and cls not in seen:
            seen.append(cls)
    return seen


def our_names(cls: type) -> set[str]:
    parser = argparse.ArgumentParser()
    cls._add_argparse_args(parser)
    return {name for action in parser._actions if action.dest != "help"
            for name in [action.dest, *(s.lstrip("-").replace("-", "_") for s in action.option_strings)]}


def test_no_option_name_or_dest_of_ours_is_one_of_beams():
    ours = our_options_classes()
    assert {c.__name__ for c in ours} >= {"BuildWitOptions", "BuildQueriesOptions", "OutputOptions"}
    beam = beam_options()
    # The classes the collisions were found with are among those read, so the scan cannot silently miss them.
    assert {"DaskOptions", "SetupOptions", "StandardOptions", "GoogleCloudOptions"} <= {c for _, c in beam}
    clashes = {(cls.__name__, name, beam_cls) for cls in ours for name in our_names(cls)
               for (_file, beam_cls), names in beam.items() if name in names}
    assert clashes == set()


def test_the_scan_sees_the_collisions_that_were_fixed():
    beam_names = set().union(*beam_options().values())
    assert {"timeout", "user_agent"} <= beam_names  # why --fetch-timeout and --fetch-user-agent


@pytest.mark.parametrize("module, argv", [
    (build_wit, ["--pairs", "p.parquet", "--queries", "q.txt", "--output", "out"]),
    (build_queries, ["--output", "out"]),
], ids=["build", "queries"])
def test_every_default_option_value_is_json_safe(module, argv):
    options = module.parse_options(argv)
    json.dumps(options.get_all_options(drop_default=False), allow_nan=False)  # raises on inf / nan


def test_no_max_aspect_ratio_means_no_limit_and_a_value_is_kept():
    argv = ["--pairs", "p.parquet", "--queries", "q.txt", "--output", "out"]
    assert build_wit.shard_config(build_wit.parse_options(argv)).image.max_aspect_ratio == float("inf")
    limited = build_wit.parse_options([*argv, "--max-aspect-ratio", "3"])
    assert build_wit.shard_config(limited).image.max_aspect_ratio == 3


def test_fetch_options_reach_the_fetcher_under_their_new_names():
    o = build_wit.parse_options(["--pairs", "p", "--queries", "q", "--output", "o", "--fetch-timeout", "7",
                                 "--fetch-user-agent", "bot/1"])
    fetch = build_wit.fetch_options(o)
    assert (fetch.timeout_s, fetch.user_agent) == (7, "bot/1")


def test_views_are_made_once_and_share_every_value():
    # OutputOptions.view_as caches one view per class (Beam re-parses the command line for each view): views
    # must still read and write the one set of values, and pickle without the cache.
    import pickle

    from apache_beam.options.pipeline_options import StandardOptions, TypeOptions

    o = build_wit.parse_options(["--pairs", "p.parquet", "--queries", "q.txt", "--output", "out",
                                 "--image-size", "128"])
    assert o.view_as(TypeOptions) is o.view_as(TypeOptions)
    o.view_as(StandardOptions).runner = "SomeRunner"
    assert o.view_as(StandardOptions).runner == "SomeRunner" == o.get_all_options()["runner"]
    o.view_as(TypeOptions).pipeline_type_check = False
    assert o.get_all_options()["pipeline_type_check"] is False
    copy = pickle.loads(pickle.dumps(o))
    assert "_views" not in copy.__dict__ and copy.image_size == 128
    assert copy.view_as(StandardOptions).runner == "SomeRunner"
    copy.view_as(StandardOptions).runner = "Other"
    assert o.view_as(StandardOptions).runner == "SomeRunner"  # the copy has its own values
