"""Background processes that ``rok up`` starts and ``rok down`` stops: a pid file and a log file each.

Everything lives under one state directory: ``<state>/run/<name>.pid`` and ``<state>/logs/<name>.log``.
A pid file is trusted only while its process is alive *and* its command line still names what we started,
so a recycled pid is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from rokcommon.errors import PermanentError, TemporaryError


class StartFailed(PermanentError):
    """A service exited, or never said it was ready; the message names its log."""


@dataclass(frozen=True)
class Managed:
    """One background process: its name, its command, and where its pid and log live."""

    name: str
    argv: tuple[str, ...]
    state_dir: Path
    marker: str  # a string its command line contains (module name or binary), to recognise it

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of the running process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _alive(pid) and self.marker in _cmdline(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def spawn(self, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
        """Start it detached (its own session), output appended to its log; returns it and the log offset."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            offset = log.tell()
            process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=self.state_dir,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        return process, offset

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; True if it was running."""
        return bool(stop_all([self], timeout))

    def log_tail(self, offset: int = 0, lines: int = 3) -> str:
        """What its log says since ``offset``, in one line: its errors if it logged any, else its last lines."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        entries = [_log_entry(line) for line in text.splitlines() if line.strip()]
        errors = [message for level, message in entries if level in ("error", "critical")]
        chosen = errors[:lines] if errors else [message for _, message in entries[-lines:]]
        return " | ".join(m if len(m) <= 300 else m[:297] + "..." for m in chosen)


def _log_entry(line: str) -> tuple[str, str]:
    """(level, message) of a log line: rok's JSON lines, or plain text as it is."""
    if line.startswith("{"):
        try:
            entry = json.loads(line)
            return str(entry.get("level", "")).lower(), str(entry.get("message", line)).splitlines()[0]
        except (ValueError, AttributeError, IndexError):
            pass
    return "", line.strip()


def stop_all(processes: Sequence[Managed], timeout: float = 10.0) -> list[str]:
    """Stop several at once: SIGTERM to each, then SIGKILL to those still there after ``timeout`` seconds.

    Returns the names of those that were running.
    """
    running = [(m, pid) for m in processes if (pid := m.pid()) is not None]
    for _, pid in running:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for managed, pid in running:
        if not _wait_gone(pid, max(0.0, deadline - time.monotonic())):
            _signal(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
        managed.pid_file.unlink(missing_ok=True)
    return [m.name for m, _ in running]


def wait_ready(
    starting: Sequence[tuple[Managed, subprocess.Popen[bytes], int]],
    *,
    timeout: float,
    ports: dict[str, int] | None = None,
) -> None:
    """Wait until every process has logged that it is ready (and listens on its port, if it has one).

    A process that exits first, or is not ready within ``timeout``, is a :class:`StartFailed` naming its log.
    """
    ports = ports or {}
    waiting = {m.name: (m, p, off) for m, p, off in starting}
    deadline = time.monotonic() + timeout
    while waiting:
        for name, (managed, process, offset) in list(waiting.items()):
            code = process.poll()
            if code is not None:
                raise StartFailed(
                    f"{name} exited with status {code} while starting; its log {managed.log_file} ends: "
                    f"{managed.log_tail(offset)}"
                )
            if _logged_ready(managed.log_file, offset) and (name not in ports or port_open(ports[name])):
                del waiting[name]
        if not waiting:
            return
        if time.monotonic() > deadline:
            names = ", ".join(sorted(waiting))
            logs = ", ".join(str(waiting[n][0].log_file) for n in sorted(waiting))
            raise StartFailed(f"{names} not ready within {timeout:.0f}s; see {logs} (rok down stops the rest)")
        time.sleep(0.1)


def _logged_ready(log_file: Path, offset: int) -> bool:
    """True once a log line written after ``offset`` says the service is ready (``"<name> ready"``)."""
    try:
        with log_file.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        message = line
        if line.startswith("{"):
            try:
                message = str(json.loads(line).get("message", ""))
            except ValueError:
                pass
        if message.rstrip().endswith(" ready") or message.rstrip() == "ready":
            return True
    return False


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def nats_address(url: str) -> tuple[str, int]:
    """Host and port of the first server in a ``ROK_NATS_URL``."""
    first = url.split(",")[0].strip()
    parts = urlsplit(first if "://" in first else f"nats://{first}")
    return parts.hostname or "127.0.0.1", parts.port or 4222


def wait_port(port: int, *, timeout: float, what: str, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port, host):
        if time.monotonic() > deadline:
            raise TemporaryError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        # Reap it if it is our own child (rok up in the same process, as tests do), so no zombie is left.
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _alive(pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
