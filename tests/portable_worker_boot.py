"""A Python SDK worker's boot, as Beam's container entrypoint (/opt/apache/beam/boot) does it, for the portable
test: Beam's worker pool runs this as its `--container_executable` with the container contract's arguments.

It asks the runner for the job's pipeline options and staged artifacts, installs the package Beam staged from
`--setup_file` (workflow.tar.gz) into this interpreter's environment with pip, and starts Beam's SDK harness.
It runs in a worker environment that has Beam but not OpenWIT: the staged package is the only way our code
gets there, as on a remote worker.
"""

import argparse
import fcntl
import json
import os
import subprocess
import sys

import grpc
from apache_beam.portability import common_urns
from apache_beam.portability.api import (beam_artifact_api_pb2, beam_artifact_api_pb2_grpc,
                                         beam_provision_api_pb2, beam_provision_api_pb2_grpc,
                                         beam_runner_api_pb2, endpoints_pb2)
from google.protobuf import json_format, text_format

SETUP_PACKAGE = "workflow.tar.gz"  # Beam's stager's name for the sdist built from --setup_file


def fetch_artifacts(endpoint: str, dependencies, folder: str) -> list[str]:
    stub = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(grpc.insecure_channel(endpoint))
    names = []
    for dep in dependencies:
        role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload)
        assert dep.role_urn == common_urns.artifact_roles.STAGING_TO.urn, dep.role_urn
        with open(os.path.join(folder, role.staged_name), "wb") as f:
            for chunk in stub.GetArtifact(beam_artifact_api_pb2.GetArtifactRequest(artifact=dep)):
                f.write(chunk.data)
        names.append(role.staged_name)
    return names


def install_once(sdist: str) -> None:
    """Workers of one environment share it: the first installs, the others wait for it (a file lock)."""
    with open(os.path.join(sys.prefix, ".openwit-install.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = os.path.join(sys.prefix, ".openwit-installed")
        if not os.path.exists(done):
            # What Beam's boot runs for workflow.tar.gz; the dependencies are in the environment already (as in
            # Beam's image plus a requirements layer), so no index is needed.
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                            "--no-build-isolation", "--disable-pip-version-check", sdist], check=True)
            open(done, "w").close()


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("id", "logging_endpoint", "artifact_endpoint", "provision_endpoint", "control_endpoint"):
        p.add_argument(f"--{name}", required=True)
    a, _ = p.parse_known_args()
    metadata = [("worker_id", a.id)]
    provision = beam_provision_api_pb2_grpc.ProvisionServiceStub(grpc.insecure_channel(a.provision_endpoint))
    info = provision.GetProvisionInfo(beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=metadata).info
    folder = os.path.join(os.environ["OPENWIT_BOOT_DIR"], a.id)
    os.makedirs(folder, exist_ok=True)
    staged = fetch_artifacts(info.artifact_endpoint.url or a.artifact_endpoint, info.dependencies, folder)
    with open(os.path.join(folder, "staged.json"), "w") as f:
        json.dump(staged, f)
    install_once(os.path.join(folder, SETUP_PACKAGE))

    def descriptor(url):
        return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))

    env = dict(os.environ, WORKER_ID=a.id, SEMI_PERSISTENT_DIRECTORY=folder,
               PIPELINE_OPTIONS=json_format.MessageToJson(info.pipeline_options),
               CONTROL_API_SERVICE_DESCRIPTOR=descriptor(info.control_endpoint.url or a.control_endpoint),
               LOGGING_API_SERVICE_DESCRIPTOR=descriptor(info.logging_endpoint.url or a.logging_endpoint),
               RUNNER_CAPABILITIES=" ".join(info.runner_capabilities))
    os.execve(sys.executable, [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"], env)


if __name__ == "__main__":
    main()
