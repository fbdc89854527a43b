"""The registry on the bus: durable consumers that record events, and request-reply handlers for queries.

The consumers pull their messages in batches and record each batch in one transaction
(:mod:`rok_registry.batching`), then publish the ``VersionCommitted`` events the recorder hands back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeAlias

from faststream.nats import NatsMessage
from pydantic import ValidationError
from rokcommon import payloads, streams, subjects
from rokcommon.errors import Forbidden, InvalidRequest, NotFound, QueryFailed, TemporaryError
from rokcommon.events import invalid_event
from rokcommon.health import CheckFailed
from rokcommon.registry_contract import QUERIES, RETENTION, Reply, encode_reply, error_body, reply_budget
from rokcommon.service import Service

from rok_registry.batching import BatchConsumer
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rok_registry.retention import Retention
from rok_registry.settling import Commit

log = logging.getLogger(__name__)
Answers: TypeAlias = Queries | Retention  # what answers requests: the queries, and the retention requests

PIPELINE_CONSUMER = "registry-pipeline"
SNAPSHOTS_CONSUMER = "registry-snapshots"
QUEUE_GROUP = "rok-registry"


class Announcer:
    """Publish the versions a message's event made whole (all at once), and count the fresh ones."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def announce(self, commits: list[Commit]) -> None:
        await asyncio.gather(*(self.service.publish(commit.event) for commit in commits))
        now = datetime.now(UTC)
        for commit in commits:
            if not commit.fresh:
                continue
            attrs = {"phase": commit.event.phase, "complete": str(commit.event.complete).lower()}
            self.service.instruments.add("rok.registry.versions.committed", 1, attrs)
            self.service.instruments.add(
                "rok.registry.commit.latency", max(0.0, (now - commit.since).total_seconds()), attrs
            )
            log.info(
                "version committed: %s",
                commit.event.url,
                extra={"version_id": commit.event.version_id, "phase": commit.event.phase},
            )


def subscribe(
    service: Service,
    recorder: Recorder,
    queries: Queries,
    *,
    workers: int = 4,
    batch: int = 256,
    retention: Retention | None = None,
) -> None:
    """Bind the registry's consumers, query handlers and retention requests to the service's broker.

    ``batch``: events recorded in one transaction, at most; ``workers``: batches of each stream recorded and
    still being announced and acked, at most.
    """
    announcer = Announcer(service)
    recording = []
    for stream, durable, subject, description in (
        (streams.PIPELINE, PIPELINE_CONSUMER, "rok.>", "registry: run and step events"),
        (streams.SNAPSHOTS, SNAPSHOTS_CONSUMER, "rok.snapshot.>", "registry: snapshot events"),
    ):
        spec = service.consumer_spec(
            stream, durable, subject, description=description, max_ack_pending=max(64, 2 * batch * workers)
        )
        service.declare_consumer(spec)
        recording.append(
            BatchConsumer(
                spec,
                lambda events: recorder.record_batch(events, traced=False),
                announcer.announce,
                service.failed,
                size=batch,
                in_flight=workers,
                inbox_prefix=service.inbox_prefix,
                db_system=recorder.db.dialect,
            )
        )
    service.broker.loops += recording

    async def consuming() -> None:
        idle = [c.spec.durable for c in recording if not c.running]
        if idle:
            raise CheckFailed(f"not recording yet: {', '.join(idle)}")

    service.health.add("recording", consuming)

    def limit() -> int:
        return payloads.limit(service.broker.connection)

    for name, (request_model, _) in QUERIES.items():
        service.broker.subscriber(subjects.registry_query(name), queue=QUEUE_GROUP)(
            _answerer(queries, name, request_model, limit)
        )
    for name, (request_model, _) in RETENTION.items() if retention is not None else ():
        service.broker.subscriber(subjects.registry_retention(name), queue=QUEUE_GROUP)(
            _answerer(retention, name, request_model, limit)
        )


def _answerer(queries: Answers, name: str, request_model: type[Any], limit: Callable[[], int]) -> Any:
    async def answer(msg: NatsMessage) -> bytes:
        budget = reply_budget(limit())
        return encode_reply(await reply(queries, request_model, msg.raw_message.data, budget=budget), budget, name)

    answer.__name__ = f"answer_{request_model.__name__}"
    return answer


async def reply(queries: Answers, request_model: type[Any], data: bytes, *, budget: int | None = None) -> Reply:
    """The reply to one request: its result, or the typed error the query raised (whatever it raised).

    ``budget``: the bytes a reply may take; pages are filled up to it.
    """
    try:
        request = request_model.model_validate_json(data)
    except ValidationError as error:
        return Reply(error=error_body(InvalidRequest(str(invalid_event(request_model, error)))))
    try:
        result = await queries.answer(request, budget=budget)
    except (NotFound, Forbidden, InvalidRequest, TemporaryError) as error:
        return Reply(error=error_body(error))
    except Exception as error:  # a fault of ours: the asker hears of it now rather than waiting for a reply
        log.exception("the registry failed to answer %s", request_model.__name__)
        return Reply(error=error_body(QueryFailed(f"the registry failed to answer: {error_body(error).message}")))
    return Reply(result=result.model_dump(mode="json"))
