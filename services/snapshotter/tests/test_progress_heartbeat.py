"""Long snapshots report progress to JetStream, throttled, so that they are not delivered again while they run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from nats.js import JetStreamContext
from rok_snapshotter.main import build
from rok_snapshotter.settings import SnapshotterSettings
from rokcommon import bus, streams
from rokcommon.events import SnapshotCompleted, VolumeRef
from rokcommon.keepalive import Heartbeat
from rokstore import Progress
from roktesting.nats import running
from snapshotter_helpers import ObservedRepository, settled, snapshot_events, started

DURABLE = "snapshotter-node-1_example_internal"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_progress_reports_are_passed_on_at_most_once_per_interval() -> None:
    clock, sent = Clock(), []

    async def in_progress() -> None:
        sent.append(clock.now)

    heartbeat = Heartbeat(in_progress, interval=5.0, clock=clock)
    for step in range(60):  # a report every 0.5 s for 30 s
        clock.now = 100.0 + step * 0.5
        heartbeat.progress(Progress("scan", bytes_done=step))
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sent == [105.0, 110.0, 115.0, 120.0, 125.0]


async def test_a_lost_progress_report_does_not_fail_the_snapshot() -> None:
    clock = Clock()

    async def broken() -> None:
        raise ConnectionError("nats is reconnecting")

    heartbeat = Heartbeat(broken, interval=1.0, clock=clock)
    clock.now += 1.0
    heartbeat.pulse()
    await asyncio.sleep(0.01)
    assert heartbeat.sent == 1


async def test_a_snapshot_longer_than_the_ack_wait_is_not_delivered_again(
    settings_for: Callable[..., SnapshotterSettings], js: JetStreamContext, volumes: tuple[VolumeRef, ...]
) -> None:
    settings = settings_for(ack_wait=1.5, progress_interval=0.2)

    async def slow_scan(progress: Callable[[Progress], None]) -> None:
        for step in range(15):  # three seconds of scanning (twice the ack wait), reporting progress as the store does
            progress(Progress("scan", bytes_done=step))
            await asyncio.sleep(0.2)

    repository = ObservedRepository(settings.repository_url, settings.resolved_cache_dir, slow_scan)
    async with running(build(settings, repository=repository)):
        await bus.publish(js, started(volumes[:1]))
        [done] = await snapshot_events(js, 1, timeout=30)
        await settled(js, DURABLE)
        info = await js.consumer_info(streams.PIPELINE.name, DURABLE)
    await repository.close()
    assert isinstance(done, SnapshotCompleted)
    assert info.num_redelivered == 0
    assert info.delivered.consumer_seq == 1
    assert repository.calls == 1


async def test_an_event_waiting_behind_long_snapshots_is_delivered_once(
    settings_for: Callable[..., SnapshotterSettings], js: JetStreamContext, tmp_path: Path
) -> None:
    settings = settings_for(ack_wait=1.0, progress_interval=0.2, snapshot_concurrency=2)

    async def slow_scan(progress: Callable[[Progress], None]) -> None:
        for step in range(12):  # longer than the ack wait: a third event must wait for a free slot meanwhile
            progress(Progress("scan", bytes_done=step))
            await asyncio.sleep(0.2)

    repository = ObservedRepository(settings.repository_url, settings.resolved_cache_dir, slow_scan)
    async with running(build(settings, repository=repository)):
        for n in range(3):
            (tmp_path / f"ws-{n}").mkdir()
            volume = VolumeRef(name="workspace", role="workspace", path=str(tmp_path / f"ws-{n}"))
            await bus.publish(js, started((volume,), step_id=f"step-{n}"))
        done = await snapshot_events(js, 3, timeout=30)
        await settled(js, DURABLE)
        info = await js.consumer_info(streams.PIPELINE.name, DURABLE)
    await repository.close()
    assert len(done) == 3
    assert info.num_redelivered == 0
    assert info.delivered.consumer_seq == 3  # no event was handed out twice
    assert repository.calls == 3
