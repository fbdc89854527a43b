"""The registry's batched consumers against a real nats-server: messages waiting on a stream are recorded a batch
per transaction, and yet each message is decided on its own (acked, dead-lettered or redelivered)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from nats.aio.client import Client
from nats.js import JetStreamContext
from registry_testkit import RunScript, eventually
from rok_registry.database import Database
from rok_registry.handlers import PIPELINE_CONSUMER, SNAPSHOTS_CONSUMER
from rok_registry.main import build
from rok_registry.recorder import Recorder
from rok_registry.settings import RegistrySettings
from rok_registry.tables import MemberRow, VersionRow
from rokcommon import bus, streams, subjects
from rokcommon.events import Event, RunFinished, StepStarted, model_for_subject
from rokcommon.registry_client import RegistryClient
from roktesting.nats import NatsServer
from roktesting.ports import free_port
from sqlalchemy import func, select
from test_batched_recording import moved_to_another_namespace
from test_recording_lineage import canonical, lineage_in_order
from test_registry_on_the_bus import announcements, serving, whole_lineage

NS = "team-a"
CONSUMERS = ((streams.PIPELINE.name, PIPELINE_CONSUMER), (streams.SNAPSHOTS.name, SNAPSHOTS_CONSUMER))


def settings_for(nats_server: NatsServer, tmp_path: Path, *, ack_wait: float = 5.0) -> RegistrySettings:
    return RegistrySettings(
        nats_url=nats_server.url,
        state_dir=tmp_path / "state",
        log_format="text",
        registry_port=free_port(),
        retry_delay=0.2,
        ack_wait=ack_wait,
    )


async def publish_all(js: JetStreamContext, events: list[Event]) -> None:
    for event in events:
        await bus.publish(js, event)


async def dead_letters(js: JetStreamContext, expected: int) -> list[object]:
    sub = await js.pull_subscribe(f"{subjects.DEAD_LETTER}.>", stream=streams.DLQ.name)
    letters: list[object] = []
    while len(letters) < expected:
        wanted = expected - len(letters)
        letters += await eventually(lambda wanted=wanted: sub.fetch(wanted, timeout=1))  # type: ignore[misc]
    return letters


async def settled(js: JetStreamContext) -> bool:
    """Every message the registry's consumers were handed is decided, and none of them was redelivered."""
    for stream, durable in CONSUMERS:
        info = await js.consumer_info(stream, durable)
        if info.num_ack_pending or info.num_pending:
            return False
    return True


async def test_a_poison_message_in_a_batch_is_dead_lettered_and_its_neighbours_recorded_and_acked_once(
    nats_server: NatsServer, js: JetStreamContext, nc: Client, tmp_path: Path
) -> None:
    expected = await lineage_in_order(tmp_path)
    events = RunScript().events()
    await publish_all(js, events[:6])
    await js.publish(subjects.SNAPSHOT_COMPLETED, b'{"event_id": "not an event"}', headers={bus.MSG_ID: "bad"})
    poison = moved_to_another_namespace()  # its id is that of wf-1's own event: published without one
    await js.publish(poison.subject_for(), poison.model_dump_json().encode())
    await publish_all(js, events[6:])  # all waiting before the registry starts: they come in one batch per stream

    async with serving(settings_for(nats_server, tmp_path)) as registry:
        client = RegistryClient(nc, NS, timeout=5)
        lineage = await eventually(lambda: whole_lineage(client))
        letters = await dead_letters(js, 2)
        assert await eventually(lambda: settled(js))
        infos = [await js.consumer_info(stream, durable) for stream, durable in CONSUMERS]
        assert registry.service.consumers[SNAPSHOTS_CONSUMER].max_ack_pending >= 256

    assert canonical(lineage) == expected
    reasons = {letter.headers[bus.DEAD_SUBJECT]: letter.headers[bus.DEAD_REASON] for letter in letters}  # type: ignore[attr-defined]
    assert "invalid SnapshotCompleted" in reasons[subjects.SNAPSHOT_COMPLETED]
    assert "but this event says 'team-b'" in reasons[poison.subject_for()]
    assert [info.num_redelivered for info in infos] == [0, 0]  # the neighbours were acked at their first delivery
    assert sorted(a.version_id for a in await announcements(js, 7)) == sorted(
        v.id for v in [lineage.initial, *(x for s in lineage.steps for x in (s.before, s.after))] if v
    )


async def test_a_batch_recorded_but_never_acked_is_redelivered_recorded_once_and_announced(
    nats_server: NatsServer, js: JetStreamContext, nc: Client, tmp_path: Path
) -> None:
    settings = settings_for(nats_server, tmp_path, ack_wait=1.0)
    events = RunScript().events()
    await publish_all(js, events)
    await build(settings).service.declare()  # the registry's streams and consumers
    # A registry that died after its transaction committed and before it announced or acked anything: the
    # events are in the database, the messages still unacked.
    first_life = Database(settings.database)
    await first_life.migrate()
    pulled = []
    for stream, durable in CONSUMERS:
        sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
        try:
            while True:
                pulled += await sub.fetch(100, timeout=0.5)
        except TimeoutError:
            pass
        await sub.unsubscribe()
    await Recorder(first_life).record_batch([model_for_subject(m.subject).decode(m.data) for m in pulled])
    await first_life.close()

    async with serving(settings) as registry:
        client = RegistryClient(nc, NS, timeout=5)
        lineage = await eventually(lambda: whole_lineage(client))
        found = await announcements(js, 7)
        assert await eventually(lambda: settled(js))
        async with registry.db.reading() as s:
            versions = await s.scalar(select(func.count()).select_from(VersionRow))
            members = await s.scalar(select(func.count()).select_from(MemberRow))

    assert lineage.file.versions == 7 and (versions, members) == (7, 14)
    # every version announced again by the redelivery, once (its id de-duplicates it on the stream)
    assert sorted(a.version_id for a in found) == sorted(
        v.id for v in [lineage.initial, *(x for s in lineage.steps for x in (s.before, s.after))] if v
    )


async def test_the_events_of_one_run_in_a_batch_are_recorded_in_the_order_they_were_delivered(
    nats_server: NatsServer, js: JetStreamContext, nc: Client, tmp_path: Path
) -> None:
    first, second = RunScript("wf-1"), RunScript("wf-2", run_name="Second")
    a, b = first.events(), second.events()
    step = a[3]
    assert isinstance(step, StepStarted)
    moved = [  # the same step started again on other nodes, and the run's end said twice: the last one counts
        step.model_copy(update={"event_id": f"{step.event_id}-{node}", "node": node}) for node in ("node-b", "node-c")
    ]
    end = a[-1]
    assert isinstance(end, RunFinished)
    ends = [
        end.model_copy(update={"event_id": f"{end.event_id}-{n}", "outcome": outcome, "finished_at": at})
        for n, (outcome, at) in enumerate([("failed", end.finished_at), ("succeeded", end.finished_at + timedelta(1))])
    ]
    # wf-2's events between wf-1's: a batch holds both runs, interleaved
    a = [*a[:4], *moved, *a[4:], *ends]
    interleaved = [x for pair in zip(a, b, strict=False) for x in pair] + a[len(b) :]
    await publish_all(js, interleaved)

    async with serving(settings_for(nats_server, tmp_path)):
        client = RegistryClient(nc, NS, timeout=5)
        [bucket] = await eventually(lambda: client.list_buckets())
        runs = await eventually(lambda: _both_finished(client, bucket.name))
        lineage = await client.lineage(bucket.name, runs["wf-1"].name)

    assert lineage.steps[0].node == "node-c"
    assert runs["wf-1"].status == "succeeded" and runs["wf-2"].status == "succeeded"
    assert runs["wf-1"].finished_at == ends[1].finished_at


async def _both_finished(client: RegistryClient, bucket: str) -> dict[str, object] | None:
    runs = {f.workflow_uid: f for f in await client.list_files(bucket)}
    done = len(runs) == 2 and all(f.status != "running" and f.versions == 7 for f in runs.values())
    return runs if done else None
