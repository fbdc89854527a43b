"""The registry's /livez and /readyz on its web server: ready when its database answers, not while it is gone."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import asyncpg
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rok_registry.main import build
from rok_registry.settings import RegistrySettings
from roktesting.health import get_json, until_ready
from roktesting.nats import NatsServer, running
from roktesting.ports import free_port


async def test_readiness_fails_naming_the_database_while_it_is_gone_and_recovers_when_it_is_back(
    nats_server: NatsServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = RegistrySettings(
        nats_url=nats_server.url,
        state_dir=tmp_path / "state",
        log_format="text",
        registry_port=free_port(),
        database_url=postgres_dsn,
    )
    registry = build(settings, graceful_timeout=2.0)
    spans = InMemorySpanExporter()
    registry.service.telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    admin_dsn, name = postgres_dsn.rsplit("/", 1)
    gc.unfreeze()
    await registry.start_storage()
    # what starting made is kept out of full collections, which would walk it while a query waits
    assert gc.get_freeze_count() > 50_000
    try:
        async with running(registry.service):
            assert await until_ready(registry.service.health, True) == {
                "nats": "ok",
                "nats-open": "ok",
                "consumers": "ok",
                "database": "ok",
                "recording": "ok",
            }
            spans.clear()
            assert await asyncio.to_thread(get_json, f"{registry.http.url}/readyz") == (
                200,
                {"status": "ok", "failing": [], "checks": dict.fromkeys(registry.service.health.names, "ok")},
            )
            assert (await asyncio.to_thread(get_json, f"{registry.http.url}/livez"))[0] == 200
            assert [s.name for s in spans.get_finished_spans()] == []  # probes make no spans

            admin = await asyncpg.connect(f"{admin_dsn}/postgres")
            try:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                status, body = await asyncio.to_thread(get_json, f"{registry.http.url}/readyz")
                assert status == 503
                assert body["failing"] == ["database"]
                assert body["checks"]["database"].startswith("the registry database does not answer: ")
                assert f'"{name}" does not exist' in body["checks"]["database"]
                # the process is fine: no restart for a database outage
                status, body = await asyncio.to_thread(get_json, f"{registry.http.url}/livez")
                assert (status, body["status"]) == (200, "ok")
                assert (await asyncio.to_thread(get_json, f"{registry.http.url}/healthz"))[0] == 200

                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            assert (await until_ready(registry.service.health, True))["database"] == "ok"
            assert (await asyncio.to_thread(get_json, f"{registry.http.url}/readyz"))[0] == 200
    finally:
        await registry.stop_storage()
