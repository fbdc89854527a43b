# syntax=docker/dockerfile:1
# rok: the `rok` command, for what runs it inside a cluster: the create-volume-N tasks of a run (`rok clone-pvc`,
# which rok compile and the KFP clone helper put in every pipeline) and an operator's `rok` in a pod.
# Build from the workspace root (see `make images`):
#   docker build -f deploy/images/rok.Dockerfile -t rok/rok .
# Only the locked dependencies of the one package rokcli are installed (uv.lock, --frozen, no dev group), without
# its `mount` extra: no libfuse, so `rok mount` is not in this image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS builder
# a C compiler for rokscan's extension (the Python headers come with the image); the final stage has none
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/rok
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock or a manifest changes.
COPY pyproject.toml uv.lock ./
COPY libs/rokcommon/pyproject.toml libs/rokcommon/pyproject.toml
COPY libs/rokstore/pyproject.toml libs/rokstore/pyproject.toml
COPY libs/rokscan/pyproject.toml libs/rokscan/pyproject.toml
COPY libs/rokcli/pyproject.toml libs/rokcli/pyproject.toml
COPY services/pipeline-watcher/pyproject.toml services/pipeline-watcher/pyproject.toml
COPY services/snapshotter/pyproject.toml services/snapshotter/pyproject.toml
COPY services/registry/pyproject.toml services/registry/pyproject.toml
COPY services/restorer/pyproject.toml services/restorer/pyproject.toml
RUN uv sync --package rokcli --frozen --no-dev --no-install-workspace
# Then the code, installed as wheels (not editable) into /opt/rok.
COPY libs/rokcommon/src libs/rokcommon/src
COPY libs/rokstore/src libs/rokstore/src
COPY libs/rokscan/src libs/rokscan/src
COPY libs/rokcli/src libs/rokcli/src
COPY services/pipeline-watcher/src services/pipeline-watcher/src
COPY services/snapshotter/src services/snapshotter/src
COPY services/registry/src services/registry/src
COPY services/restorer/src services/restorer/src
RUN uv sync --package rokcli --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 rok \
 && useradd --system --uid 10001 --gid rok --home-dir /home/rok --create-home --shell /usr/sbin/nologin rok
COPY --from=builder /opt/rok /opt/rok
ENV PATH=/opt/rok/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /home/rok
USER 10001:10001
ENTRYPOINT ["rok"]
