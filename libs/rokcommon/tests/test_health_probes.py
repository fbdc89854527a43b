"""Liveness and readiness: what the checks report, over HTTP, and a service's NATS checks against a real server
that goes away and comes back."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.js import JetStreamContext
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rokcommon import streams, subjects
from rokcommon.events import RunFinished
from rokcommon.health import CheckFailed, Health, HealthServer, cached, nats_checks
from rokcommon.service import Service
from rokcommon.settings import RokSettings
from rokcommon.telemetry import setup_telemetry
from roktesting.health import get_json, until_ready
from roktesting.nats import NatsServer, running


async def test_readiness_names_the_failing_check_and_liveness_asks_only_the_live_ones() -> None:
    health = Health(timeout=0.5)
    database_up = True

    async def database() -> None:
        if not database_up:
            raise CheckFailed("the database does not answer")

    async def hangs() -> None:
        await asyncio.sleep(10)

    async def process() -> None:
        return None

    health.add("database", database)
    health.add("process", process, live=True)
    server = HealthServer(health, "127.0.0.1", 0)
    spans = InMemorySpanExporter()
    setup_telemetry("health-test").tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    await server.start()
    try:
        assert await asyncio.to_thread(get_json, f"{server.url}/readyz") == (
            200,
            {"status": "ok", "failing": [], "checks": {"database": "ok", "process": "ok"}},
        )
        database_up = False
        status, body = await asyncio.to_thread(get_json, f"{server.url}/readyz")
        assert status == 503
        assert body["failing"] == ["database"]
        assert body["checks"]["database"] == "the database does not answer"
        # a dependency being down is no reason to restart the process
        assert await asyncio.to_thread(get_json, f"{server.url}/livez") == (
            200,
            {"status": "ok", "failing": [], "checks": {"process": "ok"}},
        )
        health.add("stuck", hangs, live=True)
        status, body = await asyncio.to_thread(get_json, f"{server.url}/livez")
        assert (status, body["failing"], body["checks"]["stuck"]) == (503, ["stuck"], "no answer within 0.5s")
        assert [s.name for s in spans.get_finished_spans()] == []  # probes make no spans
    finally:
        await server.stop()


async def test_a_cached_check_asks_once_per_period_and_repeats_its_failure() -> None:
    calls: list[int] = []

    async def store() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise CheckFailed("the store does not answer")

    check = cached(store, seconds=3600)
    for _ in range(3):
        with pytest.raises(CheckFailed, match="the store does not answer"):
            await check()
    assert len(calls) == 1
    again = cached(store, seconds=0)
    await again()  # a period of 0 asks every time: the store answers now
    assert len(calls) == 2


async def test_a_service_is_ready_once_consuming_unready_while_nats_is_down_and_ready_again_after(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    settings = RokSettings(nats_url=nats_server.url, log_format="text")
    service = Service("health", settings, graceful_timeout=1.0)
    spec = service.consumer_spec(streams.PIPELINE, "test-health", subjects.RUN_FINISHED)

    @service.consumer(spec)
    async def handle(event: RunFinished) -> None:
        return None

    before = await service.health.ready()
    assert "consumers" in before.body()["failing"]  # not started: nothing consumes yet
    async with running(service):
        assert await until_ready(service.health, True) == {"nats": "ok", "nats-open": "ok", "consumers": "ok"}

        nats_server.stop()
        checks = await until_ready(service.health, False, "nats")
        assert checks["nats"] == "NATS connection reconnecting"
        assert (await service.health.live()).ok, "a reconnecting connection is alive"

        nats_server.start()
        assert (await until_ready(service.health, True))["nats"] == "ok"

        await js.delete_consumer(streams.PIPELINE.name, "test-health")
        checks = await until_ready(service.health, False)
        assert checks["consumers"] == f"consumer test-health of stream {streams.PIPELINE.name} does not exist"


async def test_a_connection_closed_for_good_fails_liveness(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    health = Health()
    nats_checks(health, lambda: nc)
    assert (await health.live()).ok
    await nc.close()
    live = await health.live()
    assert live.checks == {"nats-open": "NATS connection closed for good"}
    assert (await health.ready()).checks["nats"] == "NATS connection closed"
