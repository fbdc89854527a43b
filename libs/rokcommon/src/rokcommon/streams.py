"""The JetStream streams and durable consumers, as code (docs/events.md).

Every stream uses file storage and a duplicate window long enough that a restarted publisher replaying
history (the pipeline-watcher relisting workflows) is de-duplicated by ``Nats-Msg-Id``. Every consumer is
durable, acks explicitly, and bounds its deliveries; what exhausts them lands in ``ROK_DLQ``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from rokcommon import subjects

log = logging.getLogger(__name__)

DAY = 24 * 3600.0

MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    duplicate_window: float = DAY
    max_age: float = 30 * DAY
    retention: RetentionPolicy = RetentionPolicy.LIMITS

    def config(self, replicas: int = 1) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            num_replicas=replicas,
            storage=StorageType.FILE,
            retention=self.retention,
            discard=DiscardPolicy.OLD,
            duplicate_window=self.duplicate_window,
            max_age=self.max_age,
        )


PIPELINE = StreamSpec("ROK_PIPELINE", (f"{subjects.RUN_STARTED}.*", subjects.RUN_FINISHED, "rok.step.>"))
SNAPSHOTS = StreamSpec("ROK_SNAPSHOTS", ("rok.snapshot.>",))
VERSIONS = StreamSpec("ROK_VERSIONS", ("rok.version.>",))
RESTORES = StreamSpec("ROK_RESTORES", (subjects.RESTORE_REQUESTED, subjects.RESTORE_COMPLETED, subjects.RESTORE_FAILED))
DLQ = StreamSpec("ROK_DLQ", (f"{subjects.DEAD_LETTER}.>",), max_age=90 * DAY)
# The server's max-deliveries advisories, kept so that a dead-letter forwarder that was down misses none.
ADVISORIES = StreamSpec("ROK_ADVISORIES", (f"{MAX_DELIVERIES_ADVISORY}.>",), duplicate_window=120.0, max_age=7 * DAY)

STREAMS: tuple[StreamSpec, ...] = (PIPELINE, SNAPSHOTS, VERSIONS, RESTORES, DLQ, ADVISORIES)


def stream_for_subject(subject: str) -> StreamSpec:
    for spec in STREAMS:
        for pattern in spec.subjects:
            if _matches(pattern, subject):
                return spec
    raise LookupError(f"no rok stream stores subject {subject!r}")


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer.

    Retries are paced by the delay of each nak, not by a ``backoff`` list: with one, nats-server 2.9 ignores
    the nak's delay from the second redelivery on and waits for the backoff (at least ``ack_wait``) instead.
    A handler that dies or hangs is redelivered after ``ack_wait``.
    """

    stream: StreamSpec
    durable: str
    filter_subject: str
    max_deliver: int = 5
    ack_wait: float = 30.0
    backoff: tuple[float, ...] = ()
    max_ack_pending: int = 64
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL
    description: str = field(default="", compare=False)

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            description=self.description or None,
            filter_subject=self.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=self.deliver_policy,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            backoff=list(self.backoff) or None,
            max_ack_pending=self.max_ack_pending,
        )

    @property
    def dead_letter_subject(self) -> str:
        return subjects.dead_letter(self.stream.name, self.durable)


async def ensure_streams(
    js: JetStreamContext, specs: tuple[StreamSpec, ...] = STREAMS, *, replicas: int | None = None
) -> None:
    """Create or update every stream; safe to call from every service at every start.

    ``replicas`` (the services pass ``ROK_STREAM_REPLICAS``) sets how many servers of a NATS cluster keep each
    stream; a client that passes none creates streams with one and leaves existing ones as they are.
    """
    for spec in specs:
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(spec.config(replicas or 1))
            log.info("created stream", extra={"stream": spec.name, "replicas": replicas or 1})
        else:
            await js.update_stream(spec.config(replicas or info.config.num_replicas or 1))


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    """Create or update a durable consumer so its configuration is exactly ``spec``."""
    await js.add_consumer(spec.stream.name, spec.config())
