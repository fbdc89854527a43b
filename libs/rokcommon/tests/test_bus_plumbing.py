"""The bus plumbing against a real nats-server: delivery, de-duplication, retries, dead letters, tracing."""

from __future__ import annotations

import asyncio
import json
import pathlib
from datetime import UTC, datetime

import nats
import nats.js.errors
import pytest
from faststream.nats import NatsMessage
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rokcommon import bus, streams, subjects
from rokcommon.errors import TemporaryError
from rokcommon.events import RunFinished, RunRef
from rokcommon.service import Service
from rokcommon.settings import RokSettings
from roktesting.nats import NatsServer, running
from roktesting.ports import free_port

RUN = RunRef(namespace="team-a", run_id="run-1", workflow_uid="wf-1")


def finished(uid: str = "wf-1") -> RunFinished:
    return RunFinished.make(
        run=RUN.model_copy(update={"workflow_uid": uid}), outcome="succeeded", finished_at=datetime.now(UTC)
    )


def make_service(nats_server: NatsServer, **settings: object) -> Service:
    config = RokSettings(nats_url=nats_server.url, log_format="text", retry_delay=0.2, ack_wait=5.0, **settings)
    return Service("plumbing", config, graceful_timeout=2.0)


def runs_consumer(service: Service, **kw: object) -> streams.ConsumerSpec:
    return service.consumer_spec(streams.PIPELINE, "test-runs", subjects.RUN_FINISHED, **kw)


async def dead_letters(js: JetStreamContext, expected: int, timeout: float = 10.0) -> list:
    """The first ``expected`` dead letters (waiting for them to arrive)."""
    sub = await js.pull_subscribe(f"{subjects.DEAD_LETTER}.>", stream=streams.DLQ.name)
    letters: list = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(letters) < expected and asyncio.get_running_loop().time() < deadline:
        try:
            letters += await sub.fetch(expected - len(letters), timeout=0.5)
        except TimeoutError:
            pass
    return letters


async def test_an_event_round_trips_with_its_model(nats_server: NatsServer, js: JetStreamContext) -> None:
    service = make_service(nats_server)
    received: asyncio.Queue[RunFinished] = asyncio.Queue()

    @service.consumer(runs_consumer(service))
    async def on_finished(event: RunFinished) -> None:
        await received.put(event)

    sent = finished()
    async with running(service):
        await bus.publish(js, sent)
        got = await asyncio.wait_for(received.get(), 10)
    assert got == sent
    assert isinstance(got, RunFinished)


async def test_a_handler_is_given_the_event_the_service_decoded_once(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    service = make_service(nats_server)
    received: asyncio.Queue[tuple[RunFinished, object]] = asyncio.Queue()

    @service.consumer(runs_consumer(service))
    async def on_finished(event: RunFinished, msg: NatsMessage) -> None:
        await received.put((event, await msg.decode()))

    async with running(service):
        await bus.publish(js, finished())
        event, decoded = await asyncio.wait_for(received.get(), 10)
    assert event is decoded  # the very model the service's decoder made, not parsed again for the handler


async def test_a_duplicate_publish_is_dropped_by_the_stream(js: JetStreamContext) -> None:
    first = await bus.publish(js, finished())
    again = await bus.publish(js, finished())
    other = await bus.publish(js, finished("wf-2"))
    assert not first.duplicate
    assert again.duplicate
    assert again.seq == first.seq
    assert other.seq == first.seq + 1
    info = await js.stream_info(streams.PIPELINE.name)
    assert info.state.messages == 2


async def test_a_transient_failure_is_delivered_again_after_its_delay(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    service = make_service(nats_server)
    deliveries: list[tuple[int, float]] = []
    done = asyncio.Event()

    @service.consumer(runs_consumer(service))
    async def flaky(event: RunFinished, msg: NatsMessage) -> None:
        deliveries.append((msg.raw_message.metadata.num_delivered, asyncio.get_running_loop().time()))
        if len(deliveries) < 3:
            raise TemporaryError("object store unreachable", delay=0.3)
        done.set()

    async with running(service):
        await bus.publish(js, finished())
        await asyncio.wait_for(done.wait(), 15)
    assert [n for n, _ in deliveries] == [1, 2, 3]
    # the nak carried a delay: redelivery did not come at once (0.3 s, then 0.6 s)
    assert deliveries[1][1] - deliveries[0][1] >= 0.25
    assert deliveries[2][1] - deliveries[1][1] >= 0.5
    assert await dead_letters(js, 1, timeout=1.0) == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "Invalid JSON"),
        (finished().model_dump_json().replace('"outcome"', '"colour":"red","outcome"').encode(), "colour"),
        (
            finished().model_dump_json().replace('"schema_version":1', '"schema_version":99').encode(),
            "schema_version 99",
        ),
    ],
    ids=["invalid-json", "unknown-field", "unsupported-schema-version"],
)
async def test_a_permanently_bad_message_is_dead_lettered_and_the_consumer_goes_on(
    nats_server: NatsServer, js: JetStreamContext, payload: bytes, reason: str
) -> None:
    service = make_service(nats_server)
    good: asyncio.Queue[RunFinished] = asyncio.Queue()
    calls = 0

    @service.consumer(runs_consumer(service))
    async def on_finished(event: RunFinished) -> None:
        nonlocal calls
        calls += 1
        await good.put(event)

    async with running(service):
        bad_ack = await js.publish(subjects.RUN_FINISHED, payload, headers={bus.MSG_ID: "bad-1"})
        after = finished("wf-after")
        await bus.publish(js, after)
        assert (await asyncio.wait_for(good.get(), 10)) == after
        letters = await dead_letters(js, 1)
        info = await js.consumer_info(streams.PIPELINE.name, "test-runs")
    assert calls == 1
    [letter] = letters
    assert letter.data == payload
    assert reason in letter.headers[bus.DEAD_REASON]
    assert letter.headers[bus.DEAD_SEQUENCE] == str(bad_ack.seq)
    assert letter.headers[bus.DEAD_SUBJECT] == subjects.RUN_FINISHED
    assert letter.headers[bus.DEAD_DELIVERIES] == "1"  # terminated at once, never retried
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_a_message_whose_handler_never_acks_is_dead_lettered_from_the_advisory(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    service = make_service(nats_server)
    spec = runs_consumer(service, max_deliver=2, ack_wait=0.5, backoff=())
    seen: list[int] = []

    @service.consumer(spec, max_workers=3)
    async def hangs(event: RunFinished, msg: NatsMessage) -> None:
        seen.append(msg.raw_message.metadata.num_delivered)
        await asyncio.sleep(4)  # never acks in time; the server gives up after two deliveries

    async with running(service):
        ack = await bus.publish(js, finished())
        letters = await dead_letters(js, 1, timeout=15)
    [letter] = letters
    assert seen[:2] == [1, 2]
    assert json.loads(letter.data)["event_id"] == finished().event_id
    assert letter.headers[bus.DEAD_SEQUENCE] == str(ack.seq)
    assert "not acknowledged after 2 deliveries" in letter.headers[bus.DEAD_REASON]


async def test_a_nats_server_restart_loses_no_acknowledged_message(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    service = make_service(nats_server)
    received: set[str] = set()

    @service.consumer(runs_consumer(service, max_ack_pending=8))
    async def on_finished(event: RunFinished) -> None:
        received.add(event.run.workflow_uid)

    acknowledged: set[str] = set()
    async with running(service):
        for i in range(200):
            if i == 80:
                nats_server.restart()
            try:
                await bus.publish(js, finished(f"wf-{i}"), timeout=2.0)
            except Exception:
                continue
            acknowledged.add(f"wf-{i}")
        deadline = asyncio.get_running_loop().time() + 20
        while not acknowledged <= received and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
    assert len(acknowledged) >= 150
    assert acknowledged <= received


async def test_the_consumer_span_is_a_child_of_the_publisher_span(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    service = make_service(nats_server)
    exporter = InMemorySpanExporter()
    service.telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    handled = asyncio.Event()
    handler_trace: list[int] = []

    @service.consumer(runs_consumer(service))
    async def on_finished(event: RunFinished) -> None:
        handler_trace.append(trace.get_current_span().get_span_context().trace_id)
        handled.set()

    tracer = service.telemetry.tracer_provider.get_tracer("test")
    async with running(service):
        with tracer.start_as_current_span("watcher saw a run finish") as root:
            await bus.publish(js, finished())
        await asyncio.wait_for(handled.wait(), 10)
    trace_id = root.get_span_context().trace_id
    assert handler_trace == [trace_id]
    spans = exporter.get_finished_spans()
    publish = next(s for s in spans if s.name.endswith("publish") and s.context.trace_id == trace_id)
    process = [s for s in spans if s.kind is trace.SpanKind.CONSUMER and s.context.trace_id == trace_id]
    assert process, [s.name for s in spans]
    assert publish.parent is not None and publish.parent.span_id == root.get_span_context().span_id


NO_SUITABLE_PEERS = 10005  # JetStream's answer while the meta leader knows fewer servers than the replicas


async def test_streams_are_replicated_as_the_services_say_and_a_client_changes_nothing(
    tmp_path: pathlib.Path,
) -> None:
    cluster = [NatsServer(tmp_path / f"n{i}") for i in range(3)]
    routes = [free_port() for _ in cluster]
    for i, server in enumerate(cluster):
        server.extra_args = [
            "--cluster_name", "rok", "--server_name", f"n{i}", "--cluster", f"nats://127.0.0.1:{routes[i]}",
            "--routes", ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(routes) if j != i),
        ]  # fmt: skip
        server.start()
    nc = await nats.connect([s.url for s in cluster])
    try:
        js = nc.jetstream(timeout=2)
        for _ in range(100):  # the cluster elects its JetStream meta leader, then the leader learns its peers
            try:
                await streams.ensure_streams(js, (streams.PIPELINE,), replicas=3)
                break
            except (nats.js.errors.ServiceUnavailableError, nats.errors.TimeoutError):
                await asyncio.sleep(0.2)
            except nats.js.errors.BadRequestError as error:
                if error.err_code != NO_SUITABLE_PEERS:
                    raise
                await asyncio.sleep(0.2)
        await streams.ensure_streams(js, (streams.PIPELINE,))  # a CLI or a test declaring without a setting
        info = await js.stream_info(streams.PIPELINE.name)
    finally:
        await nc.close()
        for server in cluster:
            server.stop()
    assert info.config.num_replicas == 3
    assert info.cluster is not None
    assert len(info.cluster.replicas or []) == 2
