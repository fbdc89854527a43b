# syntax=docker/dockerfile:1
# rok restorer: restores volumes and notebook servers from rok URLs.
# Build from the workspace root (see `make images`):
#   docker build -f deploy/images/restorer.Dockerfile -t rok/restorer .
# Only the locked dependencies of the one package rok-restorer are installed (uv.lock, --frozen, no dev group).

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
COPY services/restorer/pyproject.toml services/restorer/pyproject.toml
RUN uv sync --package rok-restorer --frozen --no-dev --no-install-workspace
# Then the code: rokcommon, rokstore (and rokscan, compiled here) and the service, installed as wheels (not editable) into /opt/rok.
COPY libs/rokcommon/src libs/rokcommon/src
COPY libs/rokstore/src libs/rokstore/src
COPY libs/rokscan/src libs/rokscan/src
COPY services/restorer/src services/restorer/src
RUN uv sync --package rok-restorer --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 rok \
 && useradd --system --uid 10001 --gid rok --home-dir /home/rok --create-home --shell /usr/sbin/nologin rok
COPY --from=builder /opt/rok /opt/rok
ENV PATH=/opt/rok/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ROK_STATE_DIR=/var/lib/rok
RUN mkdir -p /var/lib/rok && chown rok:rok /var/lib/rok
WORKDIR /home/rok
USER 10001:10001
ENTRYPOINT ["python", "-m", "rok_restorer"]
