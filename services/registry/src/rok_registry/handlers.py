"""The registry on the bus: durable consumers that record events, and request-reply handlers for queries.

Handlers translate messages into calls of the recorder and the query layer, and publish the
``VersionCommitted`` events the recorder hands back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeAlias

from faststream.nats import NatsMessage
from opentelemetry import trace
from pydantic import ValidationError
from rokcommon import payloads, streams, subjects
from rokcommon.errors import Forbidden, InvalidRequest, NotFound, QueryFailed, TemporaryError
from rokcommon.events import (
    Event,
    RunFinished,
    RunStarted,
    SnapshotCompleted,
    SnapshotFailed,
    StepFinished,
    StepStarted,
    invalid_event,
)
from rokcommon.registry_contract import QUERIES, RETENTION, Reply, encode_reply, error_body, reply_budget
from rokcommon.service import Service
from rokcommon.telemetry import event_attributes

from rok_registry.batching import GroupCommit
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rok_registry.retention import Retention
from rok_registry.settling import Commit

log = logging.getLogger(__name__)
Answers: TypeAlias = Queries | Retention  # what answers requests: the queries, and the retention requests
tracer = trace.get_tracer("rok_registry")

PIPELINE_CONSUMER = "registry-pipeline"
SNAPSHOTS_CONSUMER = "registry-snapshots"
QUEUE_GROUP = "rok-registry"


class EventHandlers:
    """Record one event (in a transaction with the events delivered with it), then announce what it made whole."""

    def __init__(self, service: Service, recorder: Recorder, *, batch: int = 64) -> None:
        self.service = service
        self.recorder = recorder
        self.batches = GroupCommit(recorder.record_batch, size=batch)

    async def handle(self, event: Event) -> None:
        with tracer.start_as_current_span(
            f"registry record {type(event).__name__}",
            attributes={
                "messaging.message.id": event.event_id,
                "rok.event": type(event).__name__,
                **event_attributes(event),
            },
        ):
            commits = await self.batches.record(event)
            await self.announce(commits)

    async def announce(self, commits: list[Commit]) -> None:
        for commit in commits:
            await self.service.publish(commit.event)
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
    workers: int = 8,
    batch: int = 64,
    retention: Retention | None = None,
) -> None:
    """Bind the registry's consumers, query handlers and retention requests to the service's broker.

    ``workers``: events of each stream in flight at once; ``batch``: events recorded in one transaction, at most.
    """
    events = EventHandlers(service, recorder, batch=batch)
    pipeline = service.consumer_spec(
        streams.PIPELINE, PIPELINE_CONSUMER, "rok.>", description="registry: run and step events"
    )
    snapshots = service.consumer_spec(
        streams.SNAPSHOTS, SNAPSHOTS_CONSUMER, "rok.snapshot.>", description="registry: snapshot events"
    )

    @service.consumer(pipeline, max_workers=workers)
    async def on_pipeline(event: RunStarted | RunFinished | StepStarted | StepFinished) -> None:
        await events.handle(event)

    @service.consumer(snapshots, max_workers=workers)
    async def on_snapshot(event: SnapshotCompleted | SnapshotFailed) -> None:
        await events.handle(event)

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
