"""The snapshotter against a real nats-server and a real store: what it takes, announces, retries and refuses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from nats.js import JetStreamContext
from rok_snapshotter.main import build
from rok_snapshotter.repository import RepositoryHandle
from rok_snapshotter.settings import SnapshotterSettings
from rokcommon import bus, streams
from rokcommon.events import (
    RunStarted,
    SnapshotCompleted,
    SnapshotFailed,
    StepFinished,
    VolumeRef,
)
from rokstore import Progress, open_repository, restore
from roktesting.nats import running
from snapshotter_helpers import NODE, RUN, ObservedRepository, settled, snapshot_events, started, step, tree

DURABLE = "snapshotter-node-1_example_internal"


async def test_each_volume_of_a_step_start_is_snapshotted_and_announced(
    settings_for: Callable[..., SnapshotterSettings],
    js: JetStreamContext,
    volumes: tuple[VolumeRef, ...],
    tmp_path: Path,
) -> None:
    settings = settings_for()
    event = started(volumes)
    async with running(build(settings)):
        await bus.publish(js, event)
        announced = await snapshot_events(js, 2)
        await settled(js, DURABLE)
    assert all(isinstance(e, SnapshotCompleted) for e in announced)
    by_volume = {e.volume.name: e for e in announced if isinstance(e, SnapshotCompleted)}
    assert set(by_volume) == {"workspace", "data"}
    for volume in volumes:
        done = by_volume[volume.name]
        assert (done.run, done.step, done.phase, done.tags) == (RUN, event.step, "before", ())
        assert done.volumes == ("workspace", "data")
        assert done.volume == volume
        assert done.best_effort  # no step guard held the step
        assert done.repository == settings.repository_url
        assert done.node == NODE
        assert done.stats.bytes_scanned == sum(len(b) for b in tree(Path(volume.path or "")).values())
    async with await open_repository(settings.repository_url) as repo:
        for volume in volumes:
            target = tmp_path / "restored" / volume.name
            await restore(repo, by_volume[volume.name].snapshot_id, target)
            assert tree(target) == tree(Path(volume.path or ""))


async def test_a_run_start_is_tagged_initial_and_a_failed_step_is_tagged_failed(
    settings_for: Callable[..., SnapshotterSettings], js: JetStreamContext, volumes: tuple[VolumeRef, ...]
) -> None:
    now = datetime.now(UTC)
    run_started = RunStarted.make(run=RUN, run_name="r", pipeline_name="p", node=NODE, volumes=volumes, started_at=now)
    step_failed = StepFinished.make(
        step=step(), node=NODE, volumes=volumes[:1], guarded=True, outcome="failed", finished_at=now
    )
    async with running(build(settings_for())):
        await bus.publish(js, run_started)
        await bus.publish(js, step_failed)
        announced = await snapshot_events(js, 3)
    phases = sorted(
        (e.phase, e.volume.name, e.tags, e.best_effort) for e in announced if isinstance(e, SnapshotCompleted)
    )
    assert phases == [
        ("after", "workspace", ("failed",), False),
        ("initial", "data", ("initial",), True),
        ("initial", "workspace", ("initial",), True),
    ]


async def test_events_of_other_nodes_are_left_to_their_own_snapshotter(
    settings_for: Callable[..., SnapshotterSettings], js: JetStreamContext, volumes: tuple[VolumeRef, ...]
) -> None:
    settings = settings_for()
    async with running(build(settings)):
        await bus.publish(js, started(volumes, node="node-2.example.internal", step_id="elsewhere"))
        await bus.publish(js, started(volumes[:1], step_id="here"))
        announced = await snapshot_events(js, 1)
        await settled(js, DURABLE)
    assert [(e.node, e.step.step_id) for e in announced if e.step] == [(NODE, "here")]
    async with await open_repository(settings.repository_url) as repo:
        assert len(await repo.list_snapshots()) == 1


async def test_an_event_delivered_again_is_announced_again_but_snapshotted_once(
    settings_for: Callable[..., SnapshotterSettings], js: JetStreamContext, volumes: tuple[VolumeRef, ...]
) -> None:
    settings = settings_for()
    event = started(volumes)
    async with running(build(settings)):
        await bus.publish(js, event)
        first = await snapshot_events(js, 2)
        await settled(js, DURABLE)
        # the same event once more, past the stream's de-duplication (as a redelivery after a crash would be)
        await js.publish(event.subject_for(), event.model_dump_json().encode(), headers={bus.MSG_ID: "again"})
        await settled(js, DURABLE)
        info = await js.consumer_info(streams.PIPELINE.name, DURABLE)
    assert info.delivered.consumer_seq == 2  # the copy was handled
    async with await open_repository(settings.repository_url) as repo:
        assert len(await repo.list_snapshots()) == 2  # one per volume, not two
    stream = await js.stream_info(streams.SNAPSHOTS.name)
    assert stream.state.messages == 2  # the re-announcement was the same event, dropped as a duplicate
    records = await js.key_value(settings.records_bucket)
    for done in first:
        assert isinstance(done, SnapshotCompleted)
        assert SnapshotCompleted.decode((await records.get(done.event_id)).value or b"") == done


async def test_a_missing_volume_is_announced_as_failed_and_dead_lettered_while_the_others_are_taken(
    settings_for: Callable[..., SnapshotterSettings],
    js: JetStreamContext,
    volumes: tuple[VolumeRef, ...],
    tmp_path: Path,
) -> None:
    gone = VolumeRef(name="scratch", path=str(tmp_path / "no-such-dir"))
    event = started((*volumes, gone))
    async with running(build(settings_for())):
        await bus.publish(js, event)
        announced = await snapshot_events(js, 3)
        await settled(js, DURABLE)
        info = await js.consumer_info(streams.PIPELINE.name, DURABLE)
    failed = [e for e in announced if isinstance(e, SnapshotFailed)]
    assert sorted(e.volume.name for e in announced if isinstance(e, SnapshotCompleted)) == ["data", "workspace"]
    assert [e.volume.name for e in failed] == ["scratch"]
    assert "no-such-dir does not exist" in failed[0].reason
    assert failed[0].volumes == ("workspace", "data", "scratch")
    assert info.num_redelivered == 0  # permanent: never tried again
    letters = await js.pull_subscribe("rok.dlq.>", stream=streams.DLQ.name)
    [letter] = await letters.fetch(1, timeout=5)
    assert "no-such-dir does not exist" in letter.headers[bus.DEAD_REASON]


async def test_an_unreachable_store_is_retried_then_announced_as_failed_after_the_last_delivery(
    settings_for: Callable[..., SnapshotterSettings],
    js: JetStreamContext,
    volumes: tuple[VolumeRef, ...],
    tmp_path: Path,
) -> None:
    (tmp_path / "not-a-dir").write_text("the store's mount point is missing")
    settings = settings_for(repository=(tmp_path / "not-a-dir" / "repo").as_uri(), max_deliver=3)
    async with running(build(settings)):
        await bus.publish(js, started(volumes[:1]))
        announced = await snapshot_events(js, 1)
        letters = await js.pull_subscribe("rok.dlq.>", stream=streams.DLQ.name)
        [letter] = await letters.fetch(1, timeout=10)
    [failed] = announced
    assert isinstance(failed, SnapshotFailed)
    assert failed.reason.startswith("gave up after the last delivery: cannot open the repository at file://")
    assert letter.headers[bus.DEAD_DELIVERIES] == "3"  # tried on every delivery before giving up


async def test_volumes_are_snapshotted_into_an_s3_repository(
    settings_for: Callable[..., SnapshotterSettings],
    js: JetStreamContext,
    volumes: tuple[VolumeRef, ...],
    s3_repo_url: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(repository=s3_repo_url)
    handle = RepositoryHandle(s3_repo_url, cache_dir=settings.resolved_cache_dir)
    try:
        async with running(build(settings, repository=handle)):
            await bus.publish(js, started(volumes))
            announced = await snapshot_events(js, 2)
    finally:
        await handle.close()
    by_volume = {e.volume.name: e for e in announced if isinstance(e, SnapshotCompleted)}
    assert set(by_volume) == {"workspace", "data"}
    async with await open_repository(s3_repo_url) as repo:
        for volume in volumes:
            assert by_volume[volume.name].repository == s3_repo_url
            await restore(repo, by_volume[volume.name].snapshot_id, tmp_path / "restored" / volume.name)
            assert tree(tmp_path / "restored" / volume.name) == tree(Path(volume.path or ""))


async def test_a_copy_of_an_event_arriving_while_it_is_snapshotted_waits_and_takes_nothing(
    settings_for: Callable[..., SnapshotterSettings], js: JetStreamContext, volumes: tuple[VolumeRef, ...]
) -> None:
    settings = settings_for(snapshot_concurrency=2)
    release = asyncio.Event()

    async def hold(progress: Callable[[Progress], None]) -> None:
        await release.wait()

    repository = ObservedRepository(settings.repository_url, settings.resolved_cache_dir, hold)
    event = started(volumes[:1])
    async with running(build(settings, repository=repository)):
        await bus.publish(js, event)
        await js.publish(event.subject_for(), event.model_dump_json().encode(), headers={bus.MSG_ID: "copy"})
        deadline = asyncio.get_running_loop().time() + 10
        while (await js.consumer_info(streams.PIPELINE.name, DURABLE)).num_ack_pending < 2:
            assert asyncio.get_running_loop().time() < deadline, "the copy was never delivered"
            await asyncio.sleep(0.05)
        release.set()
        [done] = await snapshot_events(js, 1)
        await settled(js, DURABLE)
    await repository.close()
    assert isinstance(done, SnapshotCompleted)
    assert repository.calls == 1
    assert (await js.stream_info(streams.SNAPSHOTS.name)).state.messages == 1
