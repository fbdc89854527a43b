"""The registry against a real nats-server: consuming events, announcing versions, answering queries, downtime."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from registry_testkit import RunScript, eventually
from rok_registry.main import Registry, build
from rok_registry.settings import RegistrySettings
from rokcommon import bus, streams, subjects
from rokcommon.credentials import web_token
from rokcommon.errors import Forbidden, InvalidRequest, NotFound, TemporaryError
from rokcommon.events import SnapshotCompleted, SnapshotFailed, VersionCommitted
from rokcommon.registry_client import RegistryClient
from rokcommon.registry_contract import Lineage
from rokcommon.telemetry import Instruments
from rokcommon.urls import InvalidUrl
from roktesting.nats import NatsServer, running
from roktesting.ports import free_port


@pytest.fixture
def settings(nats_server: NatsServer, tmp_path: Path) -> RegistrySettings:
    return RegistrySettings(
        nats_url=nats_server.url,
        state_dir=tmp_path / "state",
        log_format="text",
        registry_port=free_port(),
        retry_delay=0.2,
        ack_wait=5.0,
    )


@asynccontextmanager
async def serving(settings: RegistrySettings) -> AsyncIterator[Registry]:
    """The registry as ``python -m rok_registry`` runs it: database migrated, HTTP served, consumers bound."""
    registry = build(settings, graceful_timeout=2.0)
    await registry.start_storage()
    try:
        async with running(registry.service):
            yield registry
    finally:
        await registry.stop_storage()


async def whole_lineage(client: RegistryClient, versions: int = 7) -> Lineage | None:
    buckets = await client.list_buckets()
    if not buckets:
        return None
    files = await client.list_files(buckets[0].name)
    if not files:
        return None
    lineage = await client.lineage(buckets[0].name, files[0].name)
    recorded = [lineage.initial] + [v for s in lineage.steps for v in (s.before, s.after)]
    done = [v for v in recorded if v is not None and v.committed]
    return lineage if len(done) == versions and lineage.file.status != "running" else None


async def announcements(js: JetStreamContext, expected: int) -> list[VersionCommitted]:
    sub = await js.pull_subscribe(subjects.VERSION_COMMITTED, stream=streams.VERSIONS.name)
    found: list[VersionCommitted] = []
    deadline = asyncio.get_running_loop().time() + 10
    while len(found) < expected and asyncio.get_running_loop().time() < deadline:
        try:
            msgs = await sub.fetch(expected - len(found), timeout=0.5)
        except TimeoutError:
            continue
        found += [VersionCommitted.decode(m.data) for m in msgs]
    try:  # and nothing more
        found += [VersionCommitted.decode(m.data) for m in await sub.fetch(1, timeout=0.3)]
    except TimeoutError:
        pass
    return found


def metric_points(reader: InMemoryMetricReader) -> dict[str, list]:
    data = reader.get_metrics_data()
    return {
        metric.name: list(metric.data.data_points)
        for rm in (data.resource_metrics if data else [])
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }


async def test_a_run_on_the_bus_is_recorded_and_each_version_announced_and_counted_once(
    settings: RegistrySettings, js: JetStreamContext, nc: Client
) -> None:
    client = RegistryClient(nc, "team-a", timeout=5)
    reader = InMemoryMetricReader()
    async with serving(settings) as registry:
        registry.service.instruments = Instruments(MeterProvider(metric_readers=[reader]).get_meter("test"))
        for event in RunScript().events():
            await bus.publish(js, event)
        for event in RunScript().events()[-6:]:  # redelivered snapshots and step events change nothing
            await js.publish(event.subject_for(), event.model_dump_json().encode(), stream=None)
        lineage = await eventually(lambda: whole_lineage(client))
        announced = await announcements(js, 7)

    points = metric_points(reader)
    assert sum(p.value for p in points["rok.registry.versions.committed"]) == 7
    assert sum(p.count for p in points["rok.registry.commit.latency"]) == 7
    assert min(p.min for p in points["rok.registry.commit.latency"]) >= 0

    versions = [lineage.initial] + [v for s in lineage.steps for v in (s.before, s.after)]
    assert sorted(a.url for a in announced) == sorted(v.url for v in versions)
    by_url = {a.url: a for a in announced}
    last = lineage.steps[-1].after
    assert by_url[lineage.initial.url].tags == ("initial",)
    assert by_url[last.url].step is not None and by_url[last.url].step.name == "evaluate"
    assert all(a.complete for a in announced)
    assert last.tags == ("final",)


async def test_queries_over_nats_answer_with_results_and_typed_errors(
    settings: RegistrySettings, js: JetStreamContext, nc: Client
) -> None:
    client = RegistryClient(nc, "team-a", timeout=5)
    async with serving(settings):
        for event in RunScript().events():
            await bus.publish(js, event)
        lineage = await eventually(lambda: whole_lineage(client))
        version = lineage.steps[0].after
        resolved = await client.resolve(f"{version.url}&volume=workspace")
        assert [m.snapshot_id for m in resolved.members] == ["snap-wf-1-prepare-after-workspace"]
        assert await client.get_version(version.url) == version
        listed = await client.list_versions(lineage.file.bucket, lineage.file.name)
        assert [v.id for v in listed] == [lineage.initial.id] + [
            v.id for s in lineage.steps for v in (s.before, s.after)
        ]
        found = await client.find_version("wf-1", version.step_id, "after")
        assert found == version
        assert [h.url for h in await client.search(version.id)] == [version.url]

        with pytest.raises(Forbidden, match="you are asking from namespace 'team-b'"):
            await RegistryClient(nc, "team-b").resolve(version.url)
        with pytest.raises(NotFound, match="no bucket 'nope'"):
            await client.list_files("nope")
        with pytest.raises(InvalidRequest, match="names no version"):
            await client.resolve(lineage.file.url)
        with pytest.raises(InvalidUrl):
            await client.resolve("rok://team-a")
        malformed = await nc.request(subjects.registry_query("resolve"), b'{"namespace": "team-a"}', timeout=5)
        assert json.loads(malformed.data)["error"]["kind"] == "invalid"
        assert "url" in json.loads(malformed.data)["error"]["message"]

    with pytest.raises(TemporaryError, match="no registry answers"):
        await client.list_buckets()


async def test_snapshots_completed_while_the_registry_is_down_complete_the_lineage_when_it_is_back(
    settings: RegistrySettings, js: JetStreamContext, nc: Client
) -> None:
    client = RegistryClient(nc, "team-a", timeout=5)
    events = RunScript().events()
    snapshots = [e for e in events if isinstance(e, SnapshotCompleted | SnapshotFailed)]
    others = [e for e in events if e not in snapshots]
    async with serving(settings):
        for event in others:
            await bus.publish(js, event)
        await eventually(lambda: client.list_buckets())

    for event in snapshots:  # the registry is down
        await bus.publish(js, event)
    with pytest.raises(TemporaryError):
        await client.list_buckets()

    async with serving(settings):
        lineage = await eventually(lambda: whole_lineage(client))
        announced = await announcements(js, 7)
    assert len(announced) == 7
    assert [s.name for s in lineage.steps] == ["prepare", "train", "evaluate"]
    assert lineage.steps[-1].after.tags == ("final",)


async def test_one_trace_covers_the_snapshot_publish_the_registry_record_and_its_db_commit(
    settings: RegistrySettings, js: JetStreamContext, nc: Client
) -> None:
    client = RegistryClient(nc, "team-a", timeout=5)
    exporter = InMemorySpanExporter()
    async with serving(settings) as registry:
        registry.service.telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        events = RunScript().events()
        for event in events[:2]:  # RunStarted, the initial workspace snapshot
            await bus.publish(js, event)
        await eventually(lambda: client.list_buckets())
        await bus.publish(js, events[2])  # the initial data snapshot: makes the version whole
        await eventually(lambda: _committed(client))

    spans = exporter.get_finished_spans()
    publish = next(
        s
        for s in spans
        if s.name == f"{subjects.SNAPSHOT_COMPLETED} publish"
        and s.attributes["messaging.message.id"] == events[2].event_id
    )
    trace_id = publish.context.trace_id
    in_trace = {s.context.span_id: s for s in spans if s.context.trace_id == trace_id}
    record = next(s for s in in_trace.values() if s.name == "registry record SnapshotCompleted")
    assert record.kind.name == "CONSUMER" and record.parent.span_id == publish.context.span_id
    assert record.attributes["rok.run_id"] == "run-wf-1"
    commits = [
        s for s in in_trace.values() if s.name == "registry db commit" and s.parent.span_id == record.context.span_id
    ]
    assert commits, "the DB commit is a child of the record span"
    announce = [s for s in in_trace.values() if s.name == f"{subjects.VERSION_COMMITTED} publish"]
    assert announce and announce[0].parent.span_id == record.context.span_id


async def _committed(client: RegistryClient) -> bool:
    version = await client.find_version("wf-1", None, "initial")
    return version is not None and version.committed


def http_get(url: str, token: str = "") -> tuple[int, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_the_http_api_answers_the_same_queries_with_status_codes_for_errors(
    settings: RegistrySettings, js: JetStreamContext, nc: Client
) -> None:
    client = RegistryClient(nc, "team-a", timeout=5)
    async with serving(settings) as registry:
        for event in RunScript().events():
            await bus.publish(js, event)
        lineage = await eventually(lambda: whole_lineage(client))
        api = f"{registry.http.url}/api/v1/namespaces/team-a"
        b, f = lineage.file.bucket, lineage.file.name
        version = lineage.steps[1].before
        from urllib.parse import quote

        results = await asyncio.gather(
            *(
                asyncio.to_thread(http_get, url, web_token(settings.state_dir))
                for url in [
                    f"{registry.http.url}/healthz",
                    f"{api}/buckets",
                    f"{api}/buckets/{b}/files",
                    f"{api}/buckets/{b}/files/{f}/versions",
                    f"{api}/buckets/{b}/files/{f}/versions/{version.id}",
                    f"{api}/buckets/{b}/files/{f}/lineage",
                    f"{api}/resolve?url={quote(version.url + '&volume=data')}",
                    f"{api}/find?workflow_uid=wf-1&step_id={version.step_id}&phase=before",
                    f"{api}/search?q=nightly",
                    f"{registry.http.url}/api/v1/namespaces/team-b/resolve?url={quote(version.url)}",
                    f"{api}/buckets/nope/files",
                    f"{api}/resolve?url={quote('s3://x/y')}",
                ]
            )
        )
    health, buckets, files, versions, one, lin, resolved, found, hits, forbidden, missing, invalid = results
    assert health == (200, {"status": "ok"})
    assert buckets[0] == 200 and [x["name"] for x in buckets[1]["items"]] == [b]
    assert files[0] == 200 and [x["workflow_uid"] for x in files[1]["items"]] == ["wf-1"]
    assert files[1]["total"] == 1 and files[1]["next"] is None
    assert versions[0] == 200 and len(versions[1]["items"]) == 7
    assert one == (200, json.loads(version.model_dump_json()))
    assert lin == (200, json.loads(lineage.model_dump_json()))
    assert resolved[0] == 200 and [m["volume"] for m in resolved[1]["members"]] == ["data"]
    assert found == (200, json.loads(version.model_dump_json()))
    assert hits[0] == 200 and [h["kind"] for h in hits[1]] == ["file"]
    assert forbidden[0] == 403 and forbidden[1]["error"]["kind"] == "forbidden"
    assert "namespace 'team-a'" in forbidden[1]["error"]["message"]
    assert missing == (404, {"error": {"kind": "not_found", "message": "no bucket 'nope' in namespace 'team-a'"}})
    assert invalid[0] == 400 and "must start with rok://" in invalid[1]["error"]["message"]
