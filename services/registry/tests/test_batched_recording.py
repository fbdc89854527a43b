"""Several events per database transaction: the same lineage as one by one, and a poison event fails alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from registry_testkit import RunScript, eventually
from rok_registry.main import build
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rok_registry.settings import RegistrySettings
from rokcommon import bus, streams, subjects
from rokcommon.errors import PermanentError
from rokcommon.events import Event, StepStarted
from rokcommon.registry_client import RegistryClient
from roktesting.nats import NatsServer, running
from test_recording_lineage import canonical, lineage_in_order, only_lineage
from test_registry_on_the_bus import whole_lineage

NS = "team-a"


def moved_to_another_namespace() -> Event:
    """An event of run wf-1 that says it is in team-b: it can never be recorded."""
    event = RunScript("wf-1", namespace="team-b").events()[3]
    assert isinstance(event, StepStarted)
    return event


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_batch_records_a_whole_run_as_one_by_one_would_and_announces_each_version_once(
    recorder: Recorder, queries: Queries, tmp_path: Path
) -> None:
    expected = await lineage_in_order(tmp_path)
    events = RunScript().events()

    outcomes = await recorder.record_batch(events)

    assert not [o for o in outcomes if isinstance(o, Exception)]
    lineage = await only_lineage(queries)
    assert canonical(lineage) == expected
    fresh = [c.event.url for o in outcomes if isinstance(o, list) for c in o if c.fresh]
    every = [lineage.initial.url] + [v.url for s in lineage.steps for v in (s.before, s.after)]
    assert sorted(fresh) == sorted(every)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_poison_event_in_a_batch_fails_alone_and_the_others_are_recorded(
    recorder: Recorder, queries: Queries, tmp_path: Path
) -> None:
    expected = await lineage_in_order(tmp_path)
    events = RunScript().events()
    poison = moved_to_another_namespace()
    batch = [*events[:5], poison, *events[5:]]

    outcomes = await recorder.record_batch(batch)

    failed = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, Exception)]
    assert [i for i, _ in failed] == [5]
    assert isinstance(failed[0][1], PermanentError)
    assert "recorded in namespace 'team-a', but this event says 'team-b'" in str(failed[0][1])
    assert canonical(await only_lineage(queries)) == expected


async def test_events_delivered_together_are_recorded_in_fewer_transactions_and_a_poison_one_is_dead_lettered(
    nats_server: NatsServer, js: JetStreamContext, nc: Client, tmp_path: Path
) -> None:
    settings = RegistrySettings(
        nats_url=nats_server.url,
        state_dir=tmp_path / "state",
        log_format="text",
        registry_port=0,
        retry_delay=0.2,
        ack_wait=5.0,
    )
    events = RunScript().events()
    for event in events:  # all waiting on the streams before the registry starts: delivered in batches
        await bus.publish(js, event)
    exporter = InMemorySpanExporter()
    client = RegistryClient(nc, NS, timeout=5)
    registry = build(settings, graceful_timeout=2.0)
    registry.service.telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    await registry.start_storage()
    try:
        async with running(registry.service):
            lineage = await eventually(lambda: whole_lineage(client))
            recorded = exporter.get_finished_spans()

            # then a poison event together with another run's: it is dead-lettered, the other run recorded
            poison = moved_to_another_namespace()  # its id is that of wf-1's own event: published without one
            await js.publish(poison.subject_for(), poison.model_dump_json().encode())
            for event in RunScript("wf-2", run_name="Second").events():
                await bus.publish(js, event)
            dead = await js.pull_subscribe(f"{subjects.DEAD_LETTER}.>", stream=streams.DLQ.name)
            [letter] = await eventually(lambda: dead.fetch(1, timeout=1))
            second = await eventually(lambda: _second_run(client))
    finally:
        await registry.stop_storage()

    assert lineage.steps[-1].after is not None and lineage.steps[-1].after.tags == ("final",)
    assert "but this event says 'team-b'" in letter.headers[bus.DEAD_REASON]
    assert second.status == "succeeded" and second.versions == 7
    records = [s for s in recorded if s.name.startswith("registry record ")]
    commits = [s for s in recorded if s.name == "registry db commit"]
    assert len(records) >= len(events)
    # each message's trace holds the commit of its transaction, under its record span; a transaction held several
    assert {c.context.trace_id for c in commits} == {r.context.trace_id for r in records}
    assert {c.parent.span_id for c in commits} <= {r.context.span_id for r in records}
    transactions = {(c.start_time, c.end_time) for c in commits}
    assert len(transactions) < len(records) // 2, f"{len(transactions)} transactions for {len(records)} events"


async def _second_run(client: RegistryClient) -> object:
    [bucket] = await client.list_buckets()
    runs = {f.workflow_uid: f for f in await client.list_files(bucket.name)}
    second = runs.get("wf-2")
    return second if second is not None and second.status != "running" and second.versions == 7 else None
