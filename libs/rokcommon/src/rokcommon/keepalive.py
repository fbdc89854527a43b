"""Keeping a long message alive: telling JetStream that it is still being worked on, so that it is not
delivered again meanwhile.

Long work (a snapshot, a restore) reports progress many times a second; a :class:`Heartbeat` turns those
reports into at most one ``in_progress`` every ``interval`` seconds (a fraction of the consumer's ``ack_wait``).
While the work waits (for a free slot, for another delivery of the same message) it makes no progress reports,
so :meth:`Heartbeat.keep_alive` beats on a timer instead. A handler builds one from its message::

    heartbeat = Heartbeat(msg.in_progress, settings.ack_wait / 4)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger(__name__)


class Heartbeat:
    """Sends ``send()`` (the message's ``in_progress``) at most once every ``interval`` seconds."""

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

    def progress(self, _report: object) -> None:
        """A progress callback (the store engine's, for one): any report is a sign of life."""
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
