"""Stopping a service: in-flight messages are finished, or left unacked for redelivery — never half-done and acked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from faststream.nats import NatsMessage
from nats.js import JetStreamContext
from rokcommon import bus, streams, subjects
from rokcommon.events import RunFinished, RunRef
from rokcommon.service import Service
from rokcommon.settings import RokSettings
from roktesting.nats import NatsServer, running


def finished() -> RunFinished:
    run = RunRef(namespace="team-a", run_id="run-1", workflow_uid="wf-1")
    return RunFinished.make(run=run, outcome="succeeded", finished_at=datetime.now(UTC))


def make_service(nats_server: NatsServer, graceful_timeout: float) -> Service:
    settings = RokSettings(nats_url=nats_server.url, log_format="text", ack_wait=2.0)
    return Service("shutdown", settings, graceful_timeout=graceful_timeout)


def spec(service: Service) -> streams.ConsumerSpec:
    return service.consumer_spec(streams.PIPELINE, "test-shutdown", subjects.RUN_FINISHED, backoff=())


async def test_a_message_in_flight_at_shutdown_is_finished_then_acked(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    service = make_service(nats_server, graceful_timeout=10.0)
    started, finished_work = asyncio.Event(), asyncio.Event()

    @service.consumer(spec(service))
    async def slow(event: RunFinished) -> None:
        started.set()
        await asyncio.sleep(1.0)
        finished_work.set()

    async with running(service):
        await bus.publish(js, finished())
        await asyncio.wait_for(started.wait(), 10)
    # leaving `running` stopped the broker while the handler slept: it was allowed to finish
    assert finished_work.is_set()
    info = await js.consumer_info(streams.PIPELINE.name, "test-shutdown")
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


async def test_a_message_cut_short_by_shutdown_is_redelivered_to_the_next_instance(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    first = make_service(nats_server, graceful_timeout=0.2)
    started = asyncio.Event()
    completed: list[int] = []

    @first.consumer(spec(first))
    async def too_slow(event: RunFinished) -> None:
        started.set()
        await asyncio.sleep(30)
        completed.append(1)

    async with running(first):
        await bus.publish(js, finished())
        await asyncio.wait_for(started.wait(), 10)
    assert completed == []  # cancelled, and so never acked
    info = await js.consumer_info(streams.PIPELINE.name, "test-shutdown")
    assert info.num_ack_pending == 1

    second = make_service(nats_server, graceful_timeout=5.0)
    redelivered: asyncio.Queue[int] = asyncio.Queue()

    @second.consumer(spec(second))
    async def quick(event: RunFinished, msg: NatsMessage) -> None:
        await redelivered.put(msg.raw_message.metadata.num_delivered)

    async with running(second):
        deliveries = await asyncio.wait_for(redelivered.get(), 15)
    assert deliveries == 2
