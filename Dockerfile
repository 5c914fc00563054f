# OpenWIT worker/launcher image: the pipeline and its pinned dependencies.
# Build: docker build -t openwit .    Run: docker run --rm openwit openwit build --help
FROM python:3.11-slim
WORKDIR /opt/openwit
COPY requirements.txt requirements-dev.txt constraints.txt setup.py README.md ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt
COPY openwit openwit
COPY pipeline pipeline
COPY queries queries
COPY dedup dedup
COPY encoders encoders
RUN pip install --no-cache-dir --no-deps .
ENTRYPOINT []
CMD ["openwit", "--help"]
