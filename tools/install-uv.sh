#!/usr/bin/env bash
# Install uv (from PyPI) when it is missing; prints the path of the uv to use.
# uv goes into a virtualenv of its own (~/.local/share/rok/uv-venv, linked from ~/.local/bin/uv), never into the
# system's Python (no `pip --break-system-packages`). A machine without python3-venv gets it from apt when root.
set -euo pipefail
if command -v uv >/dev/null 2>&1; then command -v uv; exit 0; fi
if [[ -x "$HOME/.local/bin/uv" ]]; then echo "$HOME/.local/bin/uv"; exit 0; fi

venv="${XDG_DATA_HOME:-$HOME/.local/share}/rok/uv-venv"
if [[ -x "$venv/bin/uv" ]]; then echo "$venv/bin/uv"; exit 0; fi

# Debian's python3 has no ensurepip until python3-venv is installed: a venv made without it has no pip.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing python3-venv (to install uv into a virtualenv of its own) …" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  elif command -v pipx >/dev/null 2>&1; then
    pipx install --quiet uv >&2
    for candidate in "$(command -v uv 2>/dev/null)" "$HOME/.local/bin/uv"; do
      [[ -n "$candidate" && -x "$candidate" ]] && { echo "$candidate"; exit 0; }
    done
  else
    echo "rok needs uv: install python3-venv (sudo apt-get install python3-venv) or pipx, or uv itself," \
      "then run make setup again" >&2
    exit 1
  fi
fi

echo "installing uv into $venv …" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check uv >&2
mkdir -p "$HOME/.local/bin"
ln -sf "$venv/bin/uv" "$HOME/.local/bin/uv"
echo "$HOME/.local/bin/uv"
