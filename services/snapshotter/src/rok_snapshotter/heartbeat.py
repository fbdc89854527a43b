"""Telling JetStream that a long snapshot is still being worked on, so that it is not delivered again meanwhile.

The store engine reports progress many times a second; a :class:`Heartbeat` turns those reports into at most
one ``in_progress`` every ``interval`` seconds (a quarter of the consumer's ``ack_wait``). While a snapshot waits
for a free slot it makes no progress reports, so :meth:`Heartbeat.keep_alive` beats on a timer instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from rokstore import Progress

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        send: Callable[[], Awaitable[None]],
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self.interval = interval
        self._clock = clock
        self._last = clock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0

    def pulse(self) -> None:
        """Report progress if the last report is ``interval`` old; cheap enough to call on every progress event."""
        now = self._clock()
        if now - self._last < self.interval:
            return
        self._last = now
        self.sent += 1
        task = asyncio.get_running_loop().create_task(self._beat())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def progress(self, _report: Progress) -> None:
        """The store engine's progress callback."""
        self.pulse()

    async def _beat(self) -> None:
        try:
            await self._send()
        except Exception as error:  # a lost beat only risks a redelivery, which is idempotent
            log.debug("could not report progress: %s", error)

    @contextlib.asynccontextmanager
    async def keep_alive(self) -> AsyncIterator[None]:
        """Beat on a timer while the body waits (for a slot, for another delivery of the same snapshot)."""

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.interval)
                self.pulse()

        ticker = asyncio.get_running_loop().create_task(tick())
        try:
            yield
        finally:
            ticker.cancel()
