"""Two processes, gloo, on the CPU: the gathered loss equals the single-process loss with the right gradients,
each rank reads different shards, and (when the encoders are there) `openwit train` runs under DDP.

The children get a file:// rendezvous (no port to pick, so no race for a free one), a 60 s collective
timeout, and a subprocess timeout: a hang fails the test instead of the suite."""

import json
import os
import subprocess
import sys

import pytest

from train_helpers import make_shards

pytestmark = pytest.mark.timeout(240)
HERE = os.path.dirname(__file__)


def has_encoders():
    try:
        import encoders

        return hasattr(encoders, "create")
    except ImportError:
        return False


def test_two_ranks_gloo(tmp_path):
    shards = make_shards(str(tmp_path / "data"), n_shards=4, per_shard=8)
    train_argv = []
    if has_encoders():
        train_argv = ["--train-data", shards, "--model", "tiny-RN", "--batch-size", "8", "--epochs", "1",
                      "--workers", "1", "--warmup", "1", "--logs", str(tmp_path / "logs"), "--no-progress",
                      "--log-every", "1"]
    env = dict(os.environ, WORLD_SIZE="2", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    procs = []
    for rank in range(2):
        out = tmp_path / f"rank{rank}.json"
        procs.append((out, subprocess.Popen(
            [sys.executable, os.path.join(HERE, "ddp_child.py"), str(tmp_path / "store"), shards, str(out),
             *train_argv],
            env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    outputs = []
    try:
        for _, proc in procs:
            outputs.append(proc.communicate(timeout=180)[0].decode(errors="replace"))
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert all(proc.returncode == 0 for _, proc in procs), "\n".join(outputs)[-3000:]
    results = [json.loads(out.read_text()) for out, _ in procs]
    for r in results:
        for mode in ("global", "local"):
            check = r["loss"][mode]
            assert check["mean_loss"] == pytest.approx(check["reference"], rel=1e-6), mode
            assert check["grad_ok"], mode
        assert r["loss"]["global"]["loss"] == pytest.approx(r["loss"]["global"]["reference"], rel=1e-6)
    keys = [set(r["keys"]) for r in results]
    assert keys[0] and keys[1] and not keys[0] & keys[1] and len(keys[0] | keys[1]) == 32
    if train_argv:
        assert all(r["train_exit"] == 0 for r in results)
        lines = [json.loads(x) for x in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
        assert any("loss" in x for x in lines)
