#!/usr/bin/env bash
# Install uv (from PyPI) when it is missing; prints the path of the uv to use.
set -euo pipefail
if command -v uv >/dev/null 2>&1; then command -v uv; exit 0; fi
if [[ -x "$HOME/.local/bin/uv" ]]; then echo "$HOME/.local/bin/uv"; exit 0; fi

if ! python3 -m pip --version >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing pip (python3-pip) to install uv …" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  else
    echo "rok needs uv: install it (pip install uv, or your package manager), then run make setup again" >&2
    exit 1
  fi
fi
echo "installing uv …" >&2
python3 -m pip install --quiet --user uv >&2 2>/dev/null \
  || python3 -m pip install --quiet --break-system-packages uv >&2 \
  || python3 -m pip install --quiet uv >&2
for candidate in "$(command -v uv 2>/dev/null)" "$HOME/.local/bin/uv" /usr/local/bin/uv; do
  [[ -n "$candidate" && -x "$candidate" ]] && { echo "$candidate"; exit 0; }
done
python3 -m uv --version >/dev/null && echo "python3 -m uv"
