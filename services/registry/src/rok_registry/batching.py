"""Group commit: events handed in one by one by concurrent handlers, recorded several per database transaction.

A transaction costs the same few round trips and one flush to disk whether it records one event or fifty, so
recording the events delivered together in one transaction multiplies what the registry records per second. Each
handler still waits for its own event's outcome: it returns (and its message is acked) only once the
transaction holding its event has committed, and an event that failed raises its own error, only to its own
handler (:meth:`~rok_registry.recorder.Recorder.record_batch` falls back to one transaction per event).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from rokcommon.events import Event

from rok_registry.settling import Commit

Outcomes = list[list[Commit] | Exception]  # per event, in order: what it announces, or why it failed
RecordBatch = Callable[[Sequence[Event]], Coroutine[Any, Any, Outcomes]]


class GroupCommit:
    """Record events in batches of at most ``size``: those handed in while a batch is gathered or committed."""

    def __init__(self, record_batch: RecordBatch, *, size: int = 64, window: float = 0.002) -> None:
        self.record_batch = record_batch
        self.size = size
        self.window = window  # seconds the first event of a batch waits for those delivered with it
        self._waiting: list[tuple[Event, asyncio.Future[list[Commit]], contextvars.Context]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def record(self, event: Event) -> list[Commit]:
        """Record ``event`` with the others handed in about now; what it announces, once committed."""
        future: asyncio.Future[list[Commit]] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future, contextvars.copy_context()))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(self.window)
        while self._waiting:
            batch, self._waiting = self._waiting[: self.size], self._waiting[self.size :]
            events = [event for event, _, _ in batch]
            try:  # in the first event's context: the transaction's span joins that event's trace
                results: Outcomes = await asyncio.get_running_loop().create_task(
                    self.record_batch(events), context=batch[0][2]
                )
            except BaseException as error:  # cancelled, or a fault of record_batch itself: every handler hears it
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(error)
                raise
            for (_, future, _), result in zip(batch, results, strict=True):
                if future.done():  # its handler stopped waiting (cancelled)
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
