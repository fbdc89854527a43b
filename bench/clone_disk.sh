#!/usr/bin/env bash
# Disk used by ten runs of the demo pipeline: with --keep (each run's clone kept, as before) and by default
# (the clone removed once the run's versions hold it). EXTRA_MB=40 adds a 40 MiB data file to the notebook.
set -euo pipefail
mkdir -p "${WORK:-/tmp/rok-clone-disk}"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=$repo/examples/demo
export PATH="$repo/.venv/bin:$HOME/.local/bin:$PATH"
for mode in keep default; do
  export ROK_STATE_DIR=${WORK:-/tmp/rok-clone-disk}/state-$mode
  export ROK_DEMO_DIR=$ROK_STATE_DIR/demo
  rm -rf "$ROK_STATE_DIR"; mkdir -p "$ROK_DEMO_DIR"
  nb=${WORK:-/tmp/rok-clone-disk}/nb-$mode
  rm -rf "$nb"; mkdir -p "$nb/workspace/steps" "$nb/workspace/wheels" "$nb/data"
  cp "$demo"/steps/* "$nb/workspace/steps/"
  python3 "$demo/build_wheel.py" "$nb/workspace/wheels" >/dev/null
  if [ "${EXTRA_MB:-0}" -gt 0 ]; then head -c $((EXTRA_MB << 20)) /dev/urandom > "$nb/data/features.bin"; fi
  sed "s|path: ./notebook/|path: $nb/|" "$demo/pipeline.yaml" > ${WORK:-/tmp/rok-clone-disk}/pipeline-$mode.yaml
  export ROK_VOLUME_ROOTS=$nb:${WORK:-/tmp/rok-clone-disk}
  export ROK_REGISTRY_PORT=$((18000 + RANDOM % 1000)) ROK_NATS_URL=nats://127.0.0.1:$((19000 + RANDOM % 1000))
  rok up >/dev/null
  for i in $(seq 10); do
    if [ $mode = keep ]; then rok run --keep ${WORK:-/tmp/rok-clone-disk}/pipeline-$mode.yaml >/dev/null 2>&1; else rok run ${WORK:-/tmp/rok-clone-disk}/pipeline-$mode.yaml >/dev/null 2>&1; fi
  done
  echo "$mode: notebook $(du -sk $nb | cut -f1) KiB; runs/ $(du -sk $ROK_STATE_DIR/runs 2>/dev/null | cut -f1 || echo 0) KiB; repository $(du -sk $ROK_STATE_DIR/repo | cut -f1) KiB; state total $(du -sk $ROK_STATE_DIR | cut -f1) KiB"
  rok down >/dev/null
done
rm -rf "${WORK:-/tmp/rok-clone-disk}"/state-* "${WORK:-/tmp/rok-clone-disk}"/nb-*
