"""Reading a service process's log as a test waits for it."""

from __future__ import annotations

import asyncio


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
