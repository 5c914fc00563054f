"""A misspelt option or a stray argument stops every entry point with exit 2 naming it (issue 16, item 3);
Beam's own options still pass through."""

import os
import subprocess
import sys

import pytest

from openwit import cli
from openwit.errors import InputError
from openwit.options import parse_pipeline_options
from pipeline import build_wit

pytestmark = pytest.mark.timeout(300)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


@pytest.fixture
def inputs(tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,A red cat on a mat\n")
    queries = tmp_path / "queries.txt"
    queries.write_text("cat\n")
    return ["--pairs", str(pairs), "--queries", str(queries), "--output", str(tmp_path / "out")]


@pytest.mark.parametrize("extra,named", [
    (["--timout", "5"], "--timout"),          # no inner hyphen: Beam would have dropped it with a warning
    (["--frobnicate"], "--frobnicate"),
    (["-x"], "-x"),
    (["more-pairs.csv"], "more-pairs.csv"),   # a stray positional argument
    (["--max-per-querry=5"], "--max-per-querry"),
])
def test_build_refuses_what_it_does_not_know(capsys, inputs, tmp_path, extra, named):
    assert build_wit.main([*inputs, *extra]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "out" / "shards").exists()  # stopped before any work


def test_beam_options_pass_through():
    options = parse_pipeline_options(
        ["--runner", "FnApiRunner", "--direct_num_workers=2", "--direct_running_mode", "multi_processing",
         "--experiments", "a", "--experiments=b", "--project", "p", "--temp_location", "/tmp/x",
         "--output", "o"], build_wit.BuildWitOptions, "openwit build")
    assert options.output == "o"
    with pytest.raises(InputError, match="--direct_num_worker"):
        parse_pipeline_options(["--direct_num_worker=2"], build_wit.BuildWitOptions, "openwit build")


@pytest.mark.parametrize("command", [
    ["queries", "--wordnet", "x", "--output", "o"], ["eval-index", "--eval-set", "a=b", "--output", "o"],
    ["demo-web", "--port", "0"], ["demo"]])
def test_other_subcommands_refuse_unknown_options(capsys, tmp_path, command):
    if command == ["demo"]:
        command = ["demo", "--output", str(tmp_path / "demo")]
    try:
        code = cli.main([*command, "--frobnicate"])
    except SystemExit as e:  # argparse's own exit, status 2 on the command line too
        code = e.code
    assert code == 2 and "frobnicate" in capsys.readouterr().err


@pytest.mark.parametrize("launcher", [
    [sys.executable, "-m", "pipeline.build_wit"],
    [os.path.join(BIN, "openwit"), "build"],
    [os.path.join(BIN, "beam"), "run", "pipeline/build_wit.py"],
], ids=["python-m", "openwit-build", "beam-run"])
def test_every_launcher_exits_2_naming_the_typo(inputs, launcher):
    proc = subprocess.run([*launcher, *inputs, "--timout", "5"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "unknown option --timout" in proc.stderr
    assert "Traceback" not in proc.stderr
