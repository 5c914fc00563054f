# OpenWIT worker image for Dataflow, Flink and Spark, which also serves as the launcher.
#
# Beam's SDK image of the very Beam version we pin: its entrypoint (/opt/apache/beam/boot) is kept, so a runner
# starts SDK workers from it as from Beam's own image (`--sdk_container_image`); the pipeline code and its
# pinned dependencies are preinstalled, so workers install nothing at start-up (no --setup_file needed).
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/openwit:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/openwit:0.1.0
# As the launcher, replace the entrypoint:
#   docker run --rm --entrypoint openwit IMAGE build --help
# Not built by the tests: the project's machines reach no container registry. tests/test_portable.py runs the
# same worker start-up (Beam's boot contract: fetch staged artifacts, install, start the SDK harness) without it.
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/openwit
# Dependencies first, in their own layer: code edits then rebuild only the last, small layers.
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt
COPY setup.py MANIFEST.in README.md requirements-dev.txt ./
COPY openwit openwit
COPY pipeline pipeline
COPY queries queries
COPY dedup dedup
COPY encoders encoders
# --no-deps: everything is installed above, pinned; a non-editable install, so workers import it from
# site-packages whatever their working directory.
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import pipeline.build_wit, apache_beam; assert apache_beam.__version__ == '2.77.0'"
WORKDIR /
# No ENTRYPOINT here: the base image's /opt/apache/beam/boot stays the entrypoint.
