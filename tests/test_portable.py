"""The whole build submitted the way Flink and Spark get it: Beam's PortableRunner, Beam's job service
(`local_job_service_main`), and SDK workers in separate processes whose environment has Beam and the pinned
dependencies but not OpenWIT, which reaches them only as the package Beam stages from `--setup_file`, as on a
remote worker. The dataset must be byte-identical to a local run's.

The worker environment is a bare venv that links the test environment's installed distributions of
requirements.txt and everything they require (a second pip install of Beam, numba, pyarrow... would take
minutes for the same files); OpenWIT's editable install is not among them."""

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import sysconfig
import time

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from build_helpers import build, dataset_bytes

pytestmark = pytest.mark.timeout(600)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_TOOLS = ["pip", "setuptools", "wheel"]  # in Beam's worker image too: the boot installs the sdist with them
# The submission pickles with dill (the `dill` extra), which fails on workers for code pickled from __main__;
# the local multi-process test covers Beam's default, cloudpickle.
PICKLER = ["dill"]


def distribution_closure(names: list[str]) -> list[importlib.metadata.Distribution]:
    todo, seen, dists = list(names), set(), []
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional build tool (wheel) that this environment lacks
        dists.append(dist)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return dists


def make_worker_env(folder: str) -> str:
    """A venv with the runtime closure of requirements.txt linked in; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True)
    python = os.path.join(folder, "bin", "python")
    target = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            check=True, capture_output=True, text=True).stdout.strip()
    source = sysconfig.get_paths()["purelib"]
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        required = [Requirement(line.split("#")[0].strip()).name for line in f if line.split("#")[0].strip()]
    for dist in distribution_closure(required + BUILD_TOOLS + PICKLER):
        for top in {str(path).split("/")[0] for path in dist.files or []}:
            if top != ".." and os.path.exists(os.path.join(source, top)):
                if not os.path.exists(os.path.join(target, top)):
                    os.symlink(os.path.join(source, top), os.path.join(target, top))
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"service on port {port} exited with {process.returncode}"
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {seconds} s")


@pytest.fixture
def services(tmp_path):
    """Beam's job service and an external worker pool, both in the worker environment, outside the repo."""
    python = make_worker_env(str(tmp_path / "worker-venv"))
    boot = tmp_path / "boot.sh"  # the pool runs one executable, as a container's entrypoint
    boot.write_text(f"#!/bin/sh\nexec {python} {os.path.join(ROOT, 'tests', 'portable_worker_boot.py')} \"$@\"\n")
    boot.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OPENWIT_BOOT_DIR"] = str(tmp_path / "boot")
    job_port, pool_port = free_port(), free_port()
    commands = [
        [python, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", str(job_port)],
        [python, "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port", str(pool_port),
         "--container_executable", str(boot)],
    ]
    log = open(tmp_path / "services.log", "w")
    processes = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True) for cmd in commands]
    try:
        for port, process in zip((job_port, pool_port), processes):
            wait_for_port(port, process)
        yield {"python": python, "job_port": job_port, "pool_port": pool_port, "boot_dir": tmp_path / "boot"}
    finally:
        for process in processes:
            os.killpg(process.pid, 15)  # the services and the SDK workers they started, in their own sessions
            process.wait(timeout=30)
        log.close()


def test_the_build_through_beams_job_service_matches_a_local_run(services, demo_inputs, tmp_path):
    python = services["python"]
    # Before the job, the worker environment has Beam but none of our code.
    probe = subprocess.run([python, "-c", "import apache_beam, pipeline"], cwd=tmp_path, capture_output=True,
                           text=True)
    assert "No module named 'pipeline'" in probe.stderr, probe.stderr

    portable = build(*demo_inputs, tmp_path / "portable", "--runner=PortableRunner",
                     f"--job_endpoint=localhost:{services['job_port']}", "--environment_type=EXTERNAL",
                     f"--environment_config=localhost:{services['pool_port']}",
                     f"--setup_file={os.path.join(ROOT, 'setup.py')}", "--sdk_location=container",
                     "--pickle_library=dill")
    local = build(*demo_inputs, tmp_path / "local")

    # The workers got the code from the package Beam staged, and ran the pipeline from there.
    staged = [json.load(open(os.path.join(services["boot_dir"], worker, "staged.json")))
              for worker in os.listdir(services["boot_dir"])]
    assert staged and all("workflow.tar.gz" in names for names in staged)
    where = subprocess.run([python, "-c", "import pipeline.build_wit as m; print(m.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(os.path.join(str(tmp_path), "worker-venv")), where

    expected = dataset_bytes(local)
    assert sorted(dataset_bytes(portable)) == sorted(expected)
    assert dataset_bytes(portable) == expected
