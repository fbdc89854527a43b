"""Talking to NATS JetStream with nats-py: connect, publish an event, dead-letter a message.

Services consume through FastStream (:mod:`rokcommon.service`); this module is what publishers outside a
FastStream handler (the pipeline-watcher, the CLI, tests) and the dead-letter machinery use. Every publish here
is measured against the server's ``max_payload`` first (:mod:`rokcommon.payloads`): an oversized message is an
error of that publish, never a closed connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoServersError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from rokcommon import credentials, payloads, subjects
from rokcommon.errors import RokError, TemporaryError
from rokcommon.events import Event
from rokcommon.settings import RokSettings
from rokcommon.streams import DLQ, MAX_DELIVERIES_ADVISORY, stream_for_subject
from rokcommon.telemetry import event_attributes

log = logging.getLogger(__name__)
tracer = trace.get_tracer("rokcommon.bus")

MSG_ID = "Nats-Msg-Id"
EXPECTED_STREAM = "Nats-Expected-Stream"
# Headers of a dead letter: why it died, where it came from, which consumer gave up on it and when. The payload
# is the original, untouched, unless the whole would not fit in a message: then it is the first
# DEAD_PREFIX bytes, DEAD_TRUNCATED says so, and the original stays in its stream at its sequence.
DEAD_REASON = "Rok-Dead-Reason"
DEAD_SUBJECT = "Rok-Original-Subject"
DEAD_STREAM = "Rok-Original-Stream"
DEAD_CONSUMER = "Rok-Original-Consumer"
DEAD_SEQUENCE = "Rok-Original-Sequence"
DEAD_DELIVERIES = "Rok-Deliveries"
DEAD_AT = "Rok-Dead-At"
DEAD_SIZE = "Rok-Original-Size"
DEAD_TRUNCATED = "Rok-Payload-Truncated"
DEAD_PREFIX = 16 * 1024  # bytes of an oversized payload a dead letter keeps


EXIT_BUS_LOST = 70  # a process's exit code when its NATS connection closed for good (EX_SOFTWARE)


class BusConnectionLost(RokError):
    """A long-running process's NATS connection was closed for good: the process must be restarted.

    nats-py reconnects by itself after a network failure or a server restart; it gives a connection up only when
    the server closed it with an error (a message over ``max_payload``, an authorization change). A service that
    went on without it would look alive and hear nothing.
    """


async def connect(
    settings: RokSettings, *, name: str = "rok", local_user: str | None = None, **options: object
) -> Client:
    """Connect to NATS, reconnecting forever; a server that cannot be reached at all is a clear error.

    The credentials are ``ROK_NATS_USER``'s, else ``local_user``'s from the state directory (see
    :mod:`rokcommon.credentials`).
    """
    options = {**credentials.connect_options(settings, local_user), **options}
    try:
        return await nats.connect(
            servers=settings.nats_servers,
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            allow_reconnect=True,
            **options,
        )
    except (NoServersError, OSError) as error:
        raise TemporaryError(
            f"cannot reach NATS at {settings.nats_url}: {error}; start nats-server -js or set ROK_NATS_URL"
        ) from error


def event_headers(event: Event, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for an event: its de-duplication id and the current trace context (W3C ``traceparent``)."""
    headers = {MSG_ID: event.event_id, **(extra or {})}
    propagate.inject(headers)
    return headers


async def publish(js: JetStreamContext, event: Event, *, timeout: float = 10.0) -> PubAck:
    """Publish an event to its stream; a re-publish of the same fact is dropped by the stream (``ack.duplicate``)."""
    subject = event.subject_for()
    stream = stream_for_subject(subject).name
    with tracer.start_as_current_span(
        f"{subject} publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "publish",
            "messaging.destination.name": subject,
            "messaging.message.id": event.event_id,
            **event_attributes(event),
        },
    ):
        payload, headers = event.model_dump_json().encode(), event_headers(event)  # in the span: its traceparent
        ack = await publish_checked(js, subject, payload, stream=stream, headers=headers, timeout=timeout)
    log.debug("published", extra={"event_id": event.event_id, "subject": subject, "duplicate": ack.duplicate})
    return ack


async def dead_letter(
    js: JetStreamContext,
    *,
    payload: bytes,
    subject: str,
    stream: str,
    consumer: str,
    sequence: int,
    deliveries: int,
    reason: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Keep a message that can never be processed, with the reason, in ``ROK_DLQ``.

    The id is the original's stream and sequence and the consumer that gave up: every consumer's rejection of
    a message is kept, and a consumer's own dead-lettering and the advisory forwarder never store the same one
    twice. A letter that would not fit in a message keeps its headers and the first :data:`DEAD_PREFIX` bytes.
    """
    keep = {k: v for k, v in (headers or {}).items() if k != MSG_ID}
    ours = {
        MSG_ID: dead_letter_id(stream, sequence, consumer),
        DEAD_REASON: reason.replace("\r", " ").replace("\n", " ")[:1000],
        DEAD_SUBJECT: subject,
        DEAD_STREAM: stream,
        DEAD_CONSUMER: consumer,
        DEAD_SEQUENCE: str(sequence),
        DEAD_DELIVERIES: str(deliveries),
        DEAD_AT: datetime.now(UTC).isoformat(),
        DEAD_SIZE: str(len(payload)),
    }
    letter = subjects.dead_letter(stream, consumer)
    ours[EXPECTED_STREAM] = DLQ.name
    most = payloads.limit(payloads.connection(js))
    if payloads.message_size(payload, {**keep, **ours}) > most:
        ours[DEAD_TRUNCATED] = "true"
        if payloads.header_size({**keep, **ours}) + DEAD_PREFIX > most:
            keep = {}  # the original's own headers are what made it too large: ours say where it is
        payload = payload[: max(0, min(DEAD_PREFIX, most - payloads.header_size({**keep, **ours})))]
    await publish_checked(js, letter, payload, stream=DLQ.name, headers={**keep, **ours})
    log.warning(
        "dead-lettered %s #%d from %s/%s: %s",
        subject,
        sequence,
        stream,
        consumer,
        reason,
        extra={"stream": stream, "consumer": consumer, "sequence": sequence, "truncated": DEAD_TRUNCATED in ours},
    )


async def publish_checked(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    stream: str,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> PubAck:
    """``js.publish`` to ``stream``, measured first: a message the server would refuse is a
    :class:`~rokcommon.payloads.MessageTooLarge` here, and the connection stays up."""
    complete = {**(headers or {}), EXPECTED_STREAM: stream}  # js.publish adds it: count it too
    payloads.check(payloads.connection(js), subject, payload, complete)
    return await js.publish(subject, payload, stream=stream, headers=complete, timeout=timeout)


def dead_letter_id(stream: str, sequence: int, consumer: str) -> str:
    """The de-duplication id of one consumer's dead letter of one message."""
    return f"dlq:{stream}:{sequence}:{consumer}"


async def forward_max_deliveries(js: JetStreamContext, advisory: Msg) -> None:
    """Turn the server's max-deliveries advisory into a dead letter carrying the original payload."""
    info = json.loads(advisory.data)
    stream, consumer, sequence = info["stream"], info["consumer"], int(info["stream_seq"])
    original = await js.get_msg(stream, sequence)
    await dead_letter(
        js,
        payload=original.data or b"",
        subject=original.subject or "",
        stream=stream,
        consumer=consumer,
        sequence=sequence,
        deliveries=int(info.get("deliveries", 0)),
        reason=f"not acknowledged after {info.get('deliveries')} deliveries (handler crashed or timed out)",
        headers=original.headers,
    )


def advisory_filter(stream: str, consumer: str) -> str:
    return f"{MAX_DELIVERIES_ADVISORY}.{stream}.{consumer}"
