# rok — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
PYTEST_ARGS ?=
# test processes side by side (pytest-xdist), one per core; each starts the servers its tests use
PYTEST_JOBS ?= auto
IMAGE_TAG   ?= 0.1.0
REGISTRY    ?=

.PHONY: help setup parts demo test lint bench images manifests clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-8s %s\n", $$1, $$2}'

# Bytecode for the dependencies and the workspace's own modules, as the images have it: a process (a service a
# test starts, a CLI call) then reads it instead of compiling every module, also where PYTHONDONTWRITEBYTECODE is set.
setup: ## install uv, the workspace (.venv, so .venv/bin/rok is the CLI) and the servers the tests use
	@bash tools/install-parts.sh
	@uv=$$(bash tools/install-uv.sh) && $$uv sync --frozen --quiet --compile-bytecode
	@PYTHONDONTWRITEBYTECODE= $(VENV)/bin/python -m compileall -q -j 0 libs/*/src services/*/src >/dev/null

parts: ## say which real servers and tools are here (nats-server, S3, PostgreSQL, chromium)
	@bash tools/check-parts.sh

demo: setup ## run the whole system on this machine and a pipeline through it
	@bash examples/demo/demo.sh

test: setup ## run every test, unit and integration, against real servers
	@bash tools/check-parts.sh || { echo "make test: real parts are missing (above); their tests will fail" >&2; }
	@$(VENV)/bin/pytest -n $(PYTEST_JOBS) $(PYTEST_ARGS)

lint: ## ruff (format check + lint), mypy and the import-layer contracts
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy libs/*/src services/*/src
	@$(VENV)/bin/lint-imports

bench: setup ## store engine vs restic/borg, event-to-version latency, the registry at 10,000 runs, browsing vs restoring
	@bash tools/install-parts.sh bench
	@$(VENV)/bin/python bench/store_bench.py
	@$(VENV)/bin/python bench/step_wait.py
	@$(VENV)/bin/python bench/latency.py
	@$(VENV)/bin/python bench/registry_scale.py
	@$(VENV)/bin/python bench/browse_bench.py

images: ## build the container images, tagged as deploy/ names them (needs a Docker engine)
	@command -v docker >/dev/null 2>&1 || { echo "make images: no docker here; the images are checked statically by make test" >&2; exit 1; }
	@for f in deploy/images/*.Dockerfile; do \
		name=$$(basename $$f .Dockerfile); \
		docker build -f $$f -t $(REGISTRY)rok/$$name:$(IMAGE_TAG) . || exit 1; \
	done

manifests: ## render deploy/overlays/prod into the operator's package (a test checks it is current)
	@{ echo "# Written by \`make manifests\` from deploy/overlays/prod: edit deploy/, never this file."; \
	  $(VENV)/bin/kubectl kustomize deploy/overlays/prod; } > services/operator/src/rok_operator/manifests/prod.yaml

clean: ## remove caches and the virtualenv
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
