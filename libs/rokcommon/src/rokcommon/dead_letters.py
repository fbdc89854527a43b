"""The dead-letter stream read back and replayed: what ``rok dlq ls | show | replay`` does.

A dead letter (written by :func:`rokcommon.bus.dead_letter`) is one consumer's rejection of one message: its id is
its sequence in ``ROK_DLQ``; its headers say which consumer gave up, why, after how many deliveries, when, and
which message of which stream it was. Replaying a letter publishes the original payload to its original subject
again, under a new ``Nats-Msg-Id`` (the stream would drop the old one as a duplicate), and marks the letter with a
message of its own on ``rok.dlq.v1.replayed.<id>``, so that it is replayed once. Every consumer of that subject
sees the message again, not only the one that rejected it; rok's effects are idempotent, so the others change
nothing. A letter that kept only a prefix of a large payload is replayed from the original message, as long as
its stream still holds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from rokcommon import bus, streams, subjects
from rokcommon.errors import NotFound, PermanentError

REPLAYED_AT = "Rok-Replayed-At"
REPLAY_OF = "Rok-Replay-Of"  # on a replayed message: the dead letter it came from


@dataclass(frozen=True)
class Replay:
    """When a letter was replayed, and where its message landed."""

    at: str
    stream: str
    sequence: int


@dataclass(frozen=True)
class DeadLetter:
    id: int  # its sequence in ROK_DLQ
    subject: str  # the original's
    stream: str
    sequence: int
    consumer: str
    reason: str
    deliveries: int
    at: str
    size: int
    truncated: bool
    payload: bytes
    headers: dict[str, str]
    replayed: Replay | None = None

    @classmethod
    def of(cls, id: int, headers: dict[str, str], payload: bytes) -> DeadLetter:
        return cls(
            id=id,
            subject=headers.get(bus.DEAD_SUBJECT, ""),
            stream=headers.get(bus.DEAD_STREAM, ""),
            sequence=int(headers.get(bus.DEAD_SEQUENCE, "0")),
            consumer=headers.get(bus.DEAD_CONSUMER, ""),
            reason=headers.get(bus.DEAD_REASON, ""),
            deliveries=int(headers.get(bus.DEAD_DELIVERIES, "0")),
            at=headers.get(bus.DEAD_AT, ""),
            size=int(headers.get(bus.DEAD_SIZE, str(len(payload)))),
            truncated=headers.get(bus.DEAD_TRUNCATED) == "true",
            payload=payload,
            headers=headers,
        )

    def to_dict(self, *, payload: bool = False) -> dict[str, Any]:
        """The letter as JSON; ``payload``: with the (kept) payload as text."""
        found: dict[str, Any] = {
            "id": self.id,
            "subject": self.subject,
            "stream": self.stream,
            "sequence": self.sequence,
            "consumer": self.consumer,
            "reason": self.reason,
            "deliveries": self.deliveries,
            "at": self.at,
            "size": self.size,
            "truncated": self.truncated,
            "replayed": None if self.replayed is None else vars(self.replayed),
        }
        if payload:
            found["headers"] = self.headers
            found["payload"] = self.payload.decode(errors="replace")
        return found


async def letters(js: JetStreamContext) -> list[DeadLetter]:
    """Every dead letter in the stream, oldest first, each with its replay if it had one."""
    try:
        info = await js.stream_info(streams.DLQ.name)
    except NotFoundError:
        return []  # no service ever started: no stream, no letters
    found: dict[int, DeadLetter] = {}
    replays: dict[int, Replay] = {}
    for sequence in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        try:
            msg = await js.get_msg(streams.DLQ.name, sequence)
        except NotFoundError:
            continue  # removed (by age or by hand)
        subject, headers = msg.subject or "", dict(msg.headers or {})
        if subject.startswith(subjects.dead_letter_replayed("")):
            mark = json.loads(msg.data or b"{}")
            replays[int(mark["letter"])] = Replay(mark["at"], mark["stream"], int(mark["sequence"]))
        else:
            found[sequence] = DeadLetter.of(sequence, headers, msg.data or b"")
    return [_with(letter, replays.get(letter.id)) for letter in found.values()]


async def letter(js: JetStreamContext, id: int) -> DeadLetter:
    """One dead letter, by its id; :class:`~rokcommon.errors.NotFound` if there is none."""
    for one in await letters(js):
        if one.id == id:
            return one
    raise NotFound(f"no dead letter {id} in {streams.DLQ.name}: `rok dlq ls` lists them")


async def replay(js: JetStreamContext, one: DeadLetter) -> Replay:
    """Publish ``one``'s original payload to its original subject again and mark the letter replayed."""
    if one.replayed is not None:
        raise PermanentError(f"dead letter {one.id} was replayed already, at {one.replayed.at}")
    payload = one.payload if not one.truncated else await _original(js, one)
    keep = {k: v for k, v in one.headers.items() if not k.startswith(("Rok-", "Nats-"))}  # e.g. traceparent
    headers = {**keep, bus.MSG_ID: f"replay:{one.id}:{one.stream}:{one.sequence}", REPLAY_OF: str(one.id)}
    try:
        stream = streams.stream_for_subject(one.subject).name
    except LookupError:
        raise PermanentError(f"dead letter {one.id}: no rok stream stores subject {one.subject!r}") from None
    ack = await bus.publish_checked(js, one.subject, payload, stream=stream, headers=headers)
    done = Replay(datetime.now(UTC).isoformat(), ack.stream, ack.seq)
    mark = json.dumps({"letter": one.id, **vars(done)}).encode()
    await bus.publish_checked(
        js,
        subjects.dead_letter_replayed(one.id),
        mark,
        stream=streams.DLQ.name,
        headers={bus.MSG_ID: f"replayed:{one.id}", REPLAYED_AT: done.at},
    )
    return done


async def _original(js: JetStreamContext, one: DeadLetter) -> bytes:
    """The whole payload of a letter that kept only a prefix: the original message, if its stream still has it."""
    try:
        original = await js.get_msg(one.stream, one.sequence)
    except NotFoundError:
        raise PermanentError(
            f"dead letter {one.id} kept only the first {len(one.payload)} of {one.size} bytes, and {one.stream} "
            f"no longer holds message {one.sequence}: it cannot be replayed"
        ) from None
    return original.data or b""


def _with(letter: DeadLetter, replayed: Replay | None) -> DeadLetter:
    if replayed is None:
        return letter
    return DeadLetter(**{**vars(letter), "replayed": replayed})
