# syntax=docker/dockerfile:1
# pve-operator image: `python -m pve_operator run` as a non-root user on a read-only root filesystem.
#
#   docker build -t ghcr.io/pve-operator/pve-operator:0.1.0 .
#
# Stage 1 builds the project's wheel and installs it with its dependencies into a virtualenv;
# stage 2 copies only that virtualenv onto a fresh base: no compiler, no pip cache, no sources.
# Both stages use the same base (same Python, same path /opt/venv), so the venv works as copied.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

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
    TMPDIR=/tmp
WORKDIR /tmp
USER 65532:65532
# 8080: Kopf's liveness endpoint (--liveness); 9090: Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "pve_operator", "run"]
CMD ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "--log-format=json"]
