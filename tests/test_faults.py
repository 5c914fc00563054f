"""Failures in the middle of a build: a retried bundle and a rerun give the dataset of an undisturbed run.

A runner retries a failed bundle by running it again (Dataflow: up to 4 times in batch); the local FnApiRunner
does not retry, so the two halves of a retry are shown apart: (1) an injected failure mid-shard or in the match
stage stops the run and leaves no half-written file under a final name, and the rerun completes it; (2) every
bundle run twice (`--direct_runner_bundle_repeat=1`, as when a retried bundle's first attempt got far) changes
no byte."""

import os

import pytest

from build_helpers import build, dataset_bytes, load_stats, shard_files

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def undisturbed(demo_inputs, tmp_path_factory):
    return dataset_bytes(build(*demo_inputs, tmp_path_factory.mktemp("undisturbed") / "ds"))


@pytest.mark.parametrize("fault", ["shard@10", "match@1"])
def test_a_failure_leaves_no_half_written_file_and_a_rerun_gives_the_same_bytes(
        fault, demo_inputs, undisturbed, tmp_path, monkeypatch):
    output = str(tmp_path / "ds")
    monkeypatch.setenv("OPENWIT_FAULTS", fault)
    monkeypatch.setenv("OPENWIT_FAULTS_DIR", str(tmp_path))
    with pytest.raises(Exception, match="injected fault"):
        build(*demo_inputs, output)
    assert os.path.exists(tmp_path / f"fired-{fault.split('@')[0]}")
    if fault.startswith("shard"):
        # The shard that failed mid-way left only its temporary tar; a final name holds whole files only.
        assert shard_files(output, "*.tar.tmp-*")
    partial = dataset_bytes(output)
    for name, data in partial.items():
        if ".tmp-" not in name:
            assert data == undisturbed[name], name
    assert "stats.json" not in partial  # the totals are written when everything else is

    build(*demo_inputs, output)  # the rerun (the fault fired once, as a transient failure does)
    assert dataset_bytes(output) == undisturbed
    assert load_stats(output)["adds_up"]


def test_a_bundle_run_twice_changes_no_byte(demo_inputs, undisturbed, tmp_path):
    output = build(*demo_inputs, tmp_path / "ds", "--direct_runner_bundle_repeat=1")
    assert dataset_bytes(output) == undisturbed

