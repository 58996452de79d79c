# syntax=docker/dockerfile:1
# pve-operator image: `python -m pve_operator run` as a non-root user on a read-only root filesystem.
#
#   docker build -t ghcr.io/pve-operator/pve-operator:0.1.0 .
#
# For both architectures at once (a multi-platform image needs buildx and a registry to push to, or
# an OCI archive: the local image store holds one platform per tag):
#
#   docker buildx create --use --name pve-operator-builder     # once; QEMU (binfmt) emulates the other arch
#   docker buildx build --platform linux/amd64,linux/arm64 \
#       -t ghcr.io/pve-operator/pve-operator:0.1.0 --push .
#
# or one architecture into the local store: docker buildx build --platform linux/arm64 --load -t ... .
# Nothing here depends on the architecture: the wheel is pure Python and pip picks each dependency's
# wheel for the platform it builds on (pydantic-core, aiohttp... have amd64 and arm64 wheels).
# tests/integration/test_image_payload.py builds and runs this payload without Docker.
#
# Stage 1 builds the project's wheel and installs it with its dependencies into a virtualenv;
# stage 2 copies only that virtualenv onto a fresh base: no compiler, no pip cache, no sources.
# Both stages use the same base (same Python, same path /opt/venv), so the venv works as copied.

# The base, pinned by tag and by digest. The digest is the one of the multi-architecture index (OCI
# image index / manifest list) of python:3.11.14-slim-bookworm, so --platform picks amd64 or arm64
# from it; a single-platform manifest digest would pin one architecture. It was taken from public
# Dockerfiles and documents that pin this tag (several independent ones agree, one says it is the
# index's), NOT checked against Docker Hub from here (no registry access while writing this). Check
# it, and find the new one when moving to the next release, with:
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm     # "Digest:" at the top = the index
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore): the operator's package, never the simulator
# (simulator/, a distribution of its own that the image does not contain).
COPY pyproject.toml README.md LICENSE ./
COPY operator/pve_operator ./operator/pve_operator
# The running container cannot write __pycache__ (read-only root filesystem), so every module is
# compiled here, into .pyc files that are used without comparing source timestamps (unchecked-hash).
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install /wheels/*.whl \
 && /opt/venv/bin/python -m compileall -q -f --invalidation-mode unchecked-hash /opt/venv/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="pve-operator" \
      org.opencontainers.image.description="Kubernetes operator (Kopf) for Proxmox VE LXC containers" \
      org.opencontainers.image.licenses="Apache-2.0"
# A named account for UID/GID 65532 (the usual "nonroot" id); no home directory, no login shell.
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nonroot
COPY --from=build /opt/venv /opt/venv
# Nothing is written outside /tmp (an emptyDir in the Deployment): no bytecode, HOME and TMPDIR there.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    USER=nonroot
# USER: Kopf asks getpass.getuser() at start, which fails for a UID without a passwd entry and no
# $USER (e.g. OpenShift's random UIDs); the variable makes any UID work.
WORKDIR /tmp
USER 65532:65532
# 8080: Kopf's liveness endpoint (--liveness); 9090: Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "pve_operator", "run"]
CMD ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "--log-format=json"]
