"""Messages at and over the server's ``max_payload`` against a real nats-server whose limit is 64 KiB: a publish
too large is refused before it is sent, a poison message is dead-lettered in a bounded letter, and the service's
connection stays up — or, closed for good, ends the service's run with an error."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from faststream.nats import NatsMessage
from nats.aio.client import Client
from nats.js import JetStreamContext
from rokcommon import bus, dead_letters, payloads, streams, subjects
from rokcommon.events import RunFinished, RunRef, RunStarted, VolumeRef
from rokcommon.service import Service
from rokcommon.settings import RokSettings
from roktesting.nats import SMALL_MAX_PAYLOAD, NatsServer, running

RUN = RunRef(namespace="team-a", run_id="run-1", workflow_uid="wf-1")


def finished(uid: str = "wf-1") -> RunFinished:
    return RunFinished.make(
        run=RUN.model_copy(update={"workflow_uid": uid}), outcome="succeeded", finished_at=datetime.now(UTC)
    )


def started_of_size(size: int) -> RunStarted:
    """A valid RunStarted whose JSON payload is exactly ``size`` bytes."""

    def make(name: str) -> RunStarted:
        return RunStarted.make(
            run=RUN,
            run_name=name,
            pipeline_name="p",
            node="node-1",
            volumes=(VolumeRef(name="workspace", role="workspace", path="/ws"),),
            started_at=datetime(2026, 1, 1, tzinfo=UTC),
        )

    short = len(make("").model_dump_json())
    return make("x" * (size - short))


def make_service(server: NatsServer) -> Service:
    settings = RokSettings(nats_url=server.url, log_format="text", retry_delay=0.2, ack_wait=5.0)
    return Service("oversized", settings, graceful_timeout=2.0)


async def client(server: NatsServer) -> tuple[Client, JetStreamContext]:
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await streams.ensure_streams(js)
    return nc, js


async def letters(js: JetStreamContext, expected: int, timeout: float = 10.0) -> list[Any]:
    sub = await js.pull_subscribe(f"{subjects.DEAD_LETTER}.>", stream=streams.DLQ.name)
    found: list[Any] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(found) < expected and asyncio.get_running_loop().time() < deadline:
        try:
            found += await sub.fetch(expected - len(found), timeout=0.5)
        except TimeoutError:
            pass
    return found


async def test_a_publish_over_max_payload_with_its_headers_is_refused_and_the_connection_stays_up(
    small_payload_nats: NatsServer,
) -> None:
    nc, js = await client(small_payload_nats)
    try:
        assert nc.max_payload == SMALL_MAX_PAYLOAD
        event = started_of_size(SMALL_MAX_PAYLOAD - 20)  # the payload fits; with its headers it does not
        with pytest.raises(payloads.MessageTooLarge) as refused:
            await bus.publish(js, event)
        assert f"max_payload of {SMALL_MAX_PAYLOAD} bytes" in str(refused.value)
        assert subjects.for_node(subjects.RUN_STARTED, "node-1") in str(refused.value)
        await nc.flush()
        assert nc.is_connected
        ack = await bus.publish(js, finished())  # the same connection goes on
        assert ack.seq == 1
    finally:
        await nc.close()


async def test_a_poison_message_just_under_max_payload_is_dead_lettered_bounded_and_the_service_goes_on(
    small_payload_nats: NatsServer,
) -> None:
    nc, js = await client(small_payload_nats)
    service = make_service(small_payload_nats)
    handled: asyncio.Queue[RunFinished] = asyncio.Queue()

    @service.consumer(service.consumer_spec(streams.PIPELINE, "test-poison", subjects.RUN_FINISHED))
    async def on_finished(event: RunFinished) -> None:
        await handled.put(event)

    # not JSON, with no headers 300 bytes under the limit: too large for a dead letter's headers, not for a replay's
    poison = b"{" + b"x" * (SMALL_MAX_PAYLOAD - 301)
    try:
        async with running(service):
            ack = await js.publish(subjects.RUN_FINISHED, poison)
            [letter] = await letters(js, 1)
            assert service.connected
            good = finished("wf-after")
            await bus.publish(js, good)
            assert await asyncio.wait_for(handled.get(), 10) == good
        info = await js.consumer_info(streams.PIPELINE.name, "test-poison")
        # a replay of the cut letter republishes the whole original, which its stream still holds
        [kept] = await dead_letters.letters(js)
        again = await dead_letters.replay(js, kept)
        replayed = await js.get_msg(streams.PIPELINE.name, again.sequence)
        assert (await dead_letters.letter(js, kept.id)).replayed == again
    finally:
        await nc.close()
    assert kept.truncated and kept.size == len(poison)
    assert replayed.data == poison and again.sequence == ack.seq + 2
    assert letter.headers[bus.DEAD_TRUNCATED] == "true"
    assert letter.headers[bus.DEAD_SIZE] == str(len(poison))
    assert letter.data == poison[: bus.DEAD_PREFIX]
    assert "Invalid JSON" in letter.headers[bus.DEAD_REASON]
    assert letter.headers[bus.DEAD_SEQUENCE] == str(ack.seq)
    assert letter.headers[bus.DEAD_CONSUMER] == "test-poison"
    assert info.num_ack_pending == 0 and info.num_pending == 0  # terminated: nothing left to redeliver


async def test_every_consumer_that_rejects_a_message_keeps_its_own_dead_letter(small_payload_nats: NatsServer) -> None:
    nc, js = await client(small_payload_nats)
    service = make_service(small_payload_nats)
    for durable in ("test-first", "test-second"):

        @service.consumer(service.consumer_spec(streams.PIPELINE, durable, subjects.RUN_FINISHED))
        async def on_finished(event: RunFinished) -> None:
            raise AssertionError("an invalid message reached the handler")

    try:
        async with running(service):
            ack = await js.publish(subjects.RUN_FINISHED, b"not json")
            found = await letters(js, 2)
        stored = (await js.stream_info(streams.DLQ.name)).state.messages
    finally:
        await nc.close()
    assert stored == 2
    assert sorted(letter.headers[bus.DEAD_CONSUMER] for letter in found) == ["test-first", "test-second"]
    for letter in found:
        assert letter.data == b"not json"
        assert letter.headers[bus.DEAD_SEQUENCE] == str(ack.seq)
        assert letter.headers[bus.DEAD_SUBJECT] == subjects.RUN_FINISHED
        assert letter.headers[bus.DEAD_DELIVERIES] == "1"
        assert "Invalid JSON" in letter.headers[bus.DEAD_REASON]
        assert datetime.fromisoformat(letter.headers[bus.DEAD_AT]).tzinfo is not None
        assert bus.DEAD_TRUNCATED not in letter.headers


async def test_a_reply_over_max_payload_is_not_sent_and_the_responder_stays_connected(
    small_payload_nats: NatsServer,
) -> None:
    service = make_service(small_payload_nats)

    @service.broker.subscriber("test.echo")
    async def echo(msg: NatsMessage) -> bytes:
        return b"y" * int(msg.raw_message.data)

    nc = await nats.connect(small_payload_nats.url)
    try:
        async with running(service):
            for _ in range(50):  # until the server knows the responder's subscription
                try:
                    await nc.request("test.echo", b"1", timeout=5)
                    break
                except nats.errors.NoRespondersError:
                    await asyncio.sleep(0.1)
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request("test.echo", str(SMALL_MAX_PAYLOAD - 10).encode(), timeout=2)
            assert service.connected
            reply = await nc.request("test.echo", b"5", timeout=5)
    finally:
        await nc.close()
    assert reply.data == b"yyyyy"


async def test_a_connection_the_server_closes_for_good_ends_the_service_with_an_error(
    small_payload_nats: NatsServer,
) -> None:
    service = make_service(small_payload_nats)

    @service.consumer(service.consumer_spec(streams.PIPELINE, "test-closed", subjects.RUN_FINISHED))
    async def on_finished(event: RunFinished) -> None: ...

    serving = asyncio.create_task(service.serve())
    for _ in range(100):  # until its consumers are bound
        if service.connected and service.broker.running:
            break
        await asyncio.sleep(0.1)
    assert service.connected
    # what an unguarded publish does: payload under the limit, headers over it — the server closes the connection
    await service.broker.connection.publish("test.x", b"z" * (SMALL_MAX_PAYLOAD - 10), headers={"H": "v" * 100})
    with pytest.raises(bus.BusConnectionLost, match="closed for good"):
        await asyncio.wait_for(serving, 20)
    assert not service.connected


SERVICE_THAT_SENDS_AN_UNGUARDED_MESSAGE = """
import sys
from rokcommon.service import Service
from rokcommon.settings import RokSettings

service = Service("unguarded", RokSettings(nats_url=sys.argv[1], log_format="text"), graceful_timeout=2.0)

@service.app.after_startup
async def send() -> None:  # payload under the limit, headers over it: the server closes the connection
    await service.broker.connection.publish("test.x", b"z" * (int(sys.argv[2]) - 10), headers={"H": "v" * 100})

service.run()
"""


def test_a_service_process_whose_connection_closes_for_good_exits_with_code_70(small_payload_nats: NatsServer) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SERVICE_THAT_SENDS_AN_UNGUARDED_MESSAGE, small_payload_nats.url, str(SMALL_MAX_PAYLOAD)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == bus.EXIT_BUS_LOST == 70, done.stderr[-2000:]
    assert "the NATS connection closed for good" in done.stderr
