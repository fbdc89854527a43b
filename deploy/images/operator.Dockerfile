# syntax=docker/dockerfile:1
# rok operator: a RokCluster resource in, the whole of rok on the cluster out (deploy/operator/).
# Build from the workspace root (see `make images`):
#   docker build -f deploy/images/operator.Dockerfile -t rok/operator .
# Only the locked dependencies of the one package rok-operator are installed (uv.lock, --frozen, no dev group).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/rok
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock or a manifest changes.
COPY pyproject.toml uv.lock ./
COPY libs/rokcommon/pyproject.toml libs/rokcommon/pyproject.toml
COPY services/operator/pyproject.toml services/operator/pyproject.toml
RUN uv sync --package rok-operator --frozen --no-dev --no-install-workspace
# Then the code: rokcommon and the operator (with rok_operator/manifests, what it renders from), as wheels into /opt/rok.
COPY libs/rokcommon/src libs/rokcommon/src
COPY services/operator/src services/operator/src
RUN uv sync --package rok-operator --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 rok \
 && useradd --system --uid 10001 --gid rok --home-dir /home/rok --create-home --shell /usr/sbin/nologin rok
COPY --from=builder /opt/rok /opt/rok
ENV PATH=/opt/rok/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /home/rok
USER 10001:10001
ENTRYPOINT ["python", "-m", "rok_operator"]
