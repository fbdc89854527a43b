"""A service as its own process in a test: start it, read its log as it runs, stop it with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager


async def read_until(
    stream: asyncio.StreamReader, text: str, lines: list[str], timeout: float = 30, *, what: str = "the process"
) -> None:
    """Read lines into ``lines`` until one contains ``text``; fail with the log so far if the process ends first."""

    async def scan() -> None:
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"{what} ended before logging {text!r}:\n{''.join(lines)}")
            lines.append(line)
            if text in line:
                return

    await asyncio.wait_for(scan(), timeout)


class ServiceProcess:
    """``python -m <module>`` with its log (stderr) read line by line into :attr:`lines`."""

    def __init__(self, module: str, process: asyncio.subprocess.Process) -> None:
        self.module = module
        self.process = process
        self.lines: list[str] = []

    async def read_until(self, text: str, timeout: float = 30) -> None:
        assert self.process.stderr is not None
        await read_until(self.process.stderr, text, self.lines, timeout, what=self.module)

    async def terminate(self, timeout: float = 30) -> tuple[int, str]:
        """Send SIGTERM; the exit code and the whole log once the process has ended."""
        assert self.process.stderr is not None
        self.process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(self.process.stderr.read(), timeout)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        return code, "".join(self.lines) + rest.decode()


@asynccontextmanager
async def service_process(module: str, env: Mapping[str, str]) -> AsyncIterator[ServiceProcess]:
    """Run ``python -m module``; it is killed when the block ends, if it has not ended by itself."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, env=dict(env), stderr=asyncio.subprocess.PIPE
    )
    try:
        yield ServiceProcess(module, process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
