#!/usr/bin/env bash
# Step 1: install the notebook's wheel (workspace/wheels/) into the workspace (workspace/lib/), offline.
# Runs in the workspace (the step's working directory). No network: the wheel is already in the notebook.
set -euo pipefail
wheel=$(ls wheels/tinyfit-*.whl)
if command -v uv >/dev/null 2>&1; then
    uv pip install --quiet --offline --no-index --python "$(command -v python3)" --target lib "$wheel"
else
    python3 -m pip install --quiet --no-index --no-deps --target lib "$wheel"
fi
echo "installed $(basename "$wheel") into $PWD/lib"
