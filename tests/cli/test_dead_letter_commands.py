"""``rok dlq ls | show | replay`` against the running system: a message the registry rejects is listed with its
consumer and reason, shown with its payload, replayed once to its subject under a new id — and rejected again,
which is a letter of its own."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import nats
from rokcommon import bus, streams, subjects
from rokcommon.credentials import connect_options
from rokcommon.permissions import RUNNER
from rokcommon.settings import RokSettings

from .stack import Stack


def _publish_as_runner(stack: Stack, subject: str, payload: bytes) -> int:
    """Publish a raw message as the local runner would (it may publish run events); its stream sequence."""

    async def publish() -> int:
        login = connect_options(RokSettings(state_dir=stack.state_dir), RUNNER)
        nc = await nats.connect(stack.nats_url, **login)  # type: ignore[arg-type]
        try:
            ack = await nc.jetstream().publish(
                subject, payload, stream=streams.PIPELINE.name, headers={bus.MSG_ID: uuid.uuid4().hex}
            )
        finally:
            await nc.close()
        return ack.seq

    return asyncio.run(publish())


def _letters(stack: Stack) -> list[dict]:
    listed = stack.rok("dlq", "ls", "--json")
    assert listed.code == 0, listed.err
    return json.loads(listed.out)  # type: ignore[no-any-return]


def _until_letters(stack: Stack, payload: bytes, count: int) -> list[dict]:
    for _ in range(100):
        ours = [
            letter
            for letter in _letters(stack)
            if json.loads(stack.rok("dlq", "show", str(letter["id"]), "--json").out)["payload"] == payload.decode()
        ]
        if len(ours) >= count:
            return ours
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} dead letters of {payload!r}: {_letters(stack)}")


def test_a_rejected_message_is_listed_shown_and_replayed_once(stack: Stack) -> None:
    payload = f"not an event {uuid.uuid4().hex}".encode()
    original = _publish_as_runner(stack, subjects.RUN_FINISHED, payload)

    [letter] = _until_letters(stack, payload, 1)
    assert letter["consumer"] == "registry-pipeline"
    assert letter["subject"] == subjects.RUN_FINISHED
    assert letter["sequence"] == original
    assert letter["deliveries"] == 1
    assert "Invalid JSON" in letter["reason"]
    assert letter["replayed"] is None
    table = stack.rok("dlq", "ls", "--consumer", "registry-pipeline")
    assert table.code == 0 and str(letter["id"]) in table.out and "registry-pipeline" in table.out

    shown = stack.rok("dlq", "show", str(letter["id"]))
    assert shown.code == 0 and payload.decode() in shown.out and "Invalid JSON" in shown.out

    replayed = stack.rok("dlq", "replay", str(letter["id"]), "--json")
    assert replayed.code == 0, replayed.err
    [again] = json.loads(replayed.out)
    assert again["stream"] == streams.PIPELINE.name and again["sequence"] > original  # not dropped as a duplicate

    # the registry rejects the replayed copy too: a letter of its own, of the new message
    letters = _until_letters(stack, payload, 2)
    first = next(x for x in letters if x["id"] == letter["id"])
    second = next(x for x in letters if x["id"] != letter["id"])
    assert first["replayed"]["sequence"] == again["sequence"]
    assert second["sequence"] == again["sequence"] and second["replayed"] is None

    twice = stack.rok("dlq", "replay", str(letter["id"]))
    assert twice.code == 1 and "replayed already" in twice.err
    # --subject takes every letter of the subject not replayed yet: only the second one now
    by_subject = stack.rok("dlq", "replay", "--subject", subjects.RUN_FINISHED, "--json")
    assert by_subject.code == 0, by_subject.err
    assert [x["id"] for x in json.loads(by_subject.out)] == [second["id"]]
