"""The restorer's consumer: a RestoreRequested in, the restore run, its outcome published.

While a restore runs, a :class:`Reporter` publishes its progress on core NATS
(``rok.restore.progress.v1.<request_id>``, never stored), and a :class:`~rokcommon.keepalive.Heartbeat` tells
JetStream the message is in progress, so a long restore is not delivered again while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

from faststream.nats import NatsMessage
from nats.aio.client import Client
from rokcommon import streams, subjects
from rokcommon.errors import PermanentError
from rokcommon.events import RestoreFailed, RestoreProgress, RestoreRequested
from rokcommon.keepalive import Heartbeat
from rokcommon.service import Service

from rok_restorer.authority import Authority
from rok_restorer.restoring import Restorer
from rok_restorer.settings import RestorerSettings

log = logging.getLogger(__name__)

DURABLE = "restorer"


def register(service: Service, restorer: Restorer, settings: RestorerSettings, authority: Authority) -> None:
    spec = service.consumer_spec(
        streams.RESTORES,
        DURABLE,
        subjects.RESTORE_REQUESTED,
        max_ack_pending=settings.restore_workers * 4,
        # No ack-timeout backoff: with one, the server stretches the delays of our naks (a nak after the second
        # delivery waits for the backoff step as well). A running restore keeps its message with in_progress.
        backoff=(),
        description="restore requests, one restore each",
    )

    @service.consumer(spec, max_workers=settings.restore_workers)
    async def on_restore_requested(event: RestoreRequested, msg: NatsMessage) -> None:
        deliveries = msg.raw_message.metadata.num_delivered
        audit = {"audit": "restore", "request_id": event.request_id, "user": event.requested_by, "source": event.url}
        try:
            await authority.check(event)
        except PermanentError as refusal:
            # the sender learns it was refused; the failure policy dead-letters the message with the reason
            log.warning("%s", refusal, extra={**audit, "refused": True})
            reason = str(refusal)
            failed = RestoreFailed.make(
                request_id=event.request_id, namespace=event.namespace, url=event.url, reason=reason
            )
            await service.publish(failed)
            raise
        log.info(
            "restoring %s into %s for %s (delivery %d)",
            event.url,
            event.target.kind,
            event.requested_by,
            deliveries,
            extra={**audit, "target": event.target.model_dump_json()},
        )
        heartbeat = Heartbeat(msg.in_progress, max(settings.ack_wait / 3, settings.restore_progress_interval))
        async with (
            heartbeat.keep_alive(),
            Reporter(
                service.broker.connection,
                subjects.restore_progress(event.request_id),
                interval=settings.restore_progress_interval,
            ) as reporter,
        ):
            outcome = await restorer.handle(
                event, progress=reporter.update, last_attempt=deliveries >= spec.max_deliver
            )
        await service.publish(outcome)


class Reporter:
    """Publishes the latest progress of each volume every ``interval`` seconds."""

    def __init__(self, nc: Client, subject: str, *, interval: float) -> None:
        self.nc = nc
        self.subject = subject
        self.interval = interval
        self._latest: dict[str, RestoreProgress] = {}
        self._sent: dict[str, RestoreProgress] = {}
        self._task: asyncio.Task[None] | None = None

    def update(self, progress: RestoreProgress) -> None:
        self._latest[progress.volume] = progress

    async def __aenter__(self) -> Reporter:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            with contextlib.suppress(Exception):
                await self._flush()

    async def _flush(self) -> None:
        for volume, progress in list(self._latest.items()):
            if self._sent.get(volume) != progress:
                await self.nc.publish(self.subject, progress.model_dump_json().encode())
                self._sent[volume] = progress
