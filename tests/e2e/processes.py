"""Each rok service as its own process, the way it runs for real: ``python -m rok_<name>``.

A :class:`ServiceProcess` starts the module with an environment, waits for its ``"<name> ready"`` log line,
and can be stopped (SIGTERM, waiting for a clean exit), killed (SIGKILL, no goodbye) and started again. Its
JSON log lines go to a file, which a failing test names and quotes.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the test process dies, however it dies (no orphaned services)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ServiceFailed(AssertionError):
    """The service exited, or did not become ready in time; the message quotes the end of its log."""


class ServiceProcess:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name  # "snapshotter", "registry", "restorer"
        self.module = f"rok_{name.replace('-', '_')}"
        self.env = env
        self.log_file = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def start(self, timeout: float = 30.0) -> None:
        """Start the process and return once it logged that it is ready."""
        assert not self.running, f"{self.name} is already running"
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.process = self._spawn()
        self.starts += 1
        await self.wait_for_log(lambda line: line.get("message") == f"{self.name} ready", timeout, offset=offset)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_file, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", self.module],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the test's signals are for the test, not for the services
                preexec_fn=_die_with_parent,
            )

    async def wait_for_log(self, predicate: Any, timeout: float = 30.0, *, offset: int = 0) -> dict[str, Any]:
        """The first JSON log line (written after ``offset``) for which ``predicate`` is true."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for line in self.lines(offset):
                if predicate(line):
                    return line
            if self.process is not None and self.process.poll() is not None:
                raise ServiceFailed(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            if loop.time() > deadline:
                raise ServiceFailed(f"{self.name}: no such log line within {timeout:.0f}s:\n{self.tail()}")
            await asyncio.sleep(0.05)

    def lines(self, offset: int = 0) -> list[dict[str, Any]]:
        """The JSON log lines written so far (after ``offset`` bytes); other output is skipped."""
        if not self.log_file.exists():
            return []
        with open(self.log_file, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        found = []
        for raw in text.splitlines():
            if raw.startswith("{"):
                try:
                    found.append(json.loads(raw))
                except ValueError:
                    continue
        return found

    def tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the process to finish what it was doing and exit; its exit code."""
        return await self._end(signal.SIGTERM, timeout)

    async def kill(self) -> int:
        """SIGKILL: the process dies at once, in the middle of whatever it was doing."""
        return await self._end(signal.SIGKILL, 10.0)

    async def restart(self, timeout: float = 30.0) -> None:
        await self.stop()
        await self.start(timeout)

    async def _end(self, sig: int, timeout: float) -> int:
        process = self.process
        if process is None or process.poll() is not None:
            self.process = None
            return process.returncode if process is not None else 0
        process.send_signal(sig)
        try:
            code = await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)
        except TimeoutError:
            process.kill()
            code = await asyncio.to_thread(process.wait)
            raise ServiceFailed(
                f"{self.name} did not stop within {timeout:.0f}s of signal {sig}:\n{self.tail()}"
            ) from None
        finally:
            self.process = None
        return code

    def close(self) -> None:
        """Kill the process if it still runs (the end of a test, whatever happened)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
