"""Volumes of different events are snapshotted at the same time, never more at once than the node allows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from nats.js import JetStreamContext
from rok_snapshotter.main import build
from rok_snapshotter.settings import SnapshotterSettings
from rokcommon import bus, streams
from rokcommon.events import RunStarted, SnapshotCompleted, StepStarted, VolumeRef
from rokstore import Progress
from roktesting.nats import running
from snapshotter_helpers import NODE, RUN, ObservedRepository, snapshot_events, started, step

STEPS = "snapshotter-node-1_example_internal"
RUNS = "snapshotter-node-1_example_internal-runs"


def directories(root: Path, *names: str) -> tuple[VolumeRef, ...]:
    refs = []
    for i, name in enumerate(names):
        (root / name).mkdir(parents=True)
        (root / name / "file").write_text(name)
        refs.append(VolumeRef(name=name, role="workspace" if i == 0 else "data", path=str(root / name)))
    return tuple(refs)


async def test_volumes_of_two_events_are_snapshotted_at_the_same_time(
    settings_for: Callable[..., SnapshotterSettings], js: JetStreamContext, tmp_path: Path
) -> None:
    settings = settings_for(snapshot_concurrency=2)
    both_running = asyncio.Event()
    seen_together: list[str] = []

    async def wait_for_the_other(progress: Callable[[Progress], None]) -> None:
        if repository.active == 2:
            seen_together.extend(sorted(repository.running))
            both_running.set()
        try:
            await asyncio.wait_for(both_running.wait(), 10)
        except TimeoutError:
            pass  # one at a time: the test fails below

    repository = ObservedRepository(settings.repository_url, settings.resolved_cache_dir, wait_for_the_other)
    async with running(build(settings, repository=repository)):
        await bus.publish(js, started(directories(tmp_path / "a", "ws-a"), step_id="step-a"))
        await bus.publish(js, started(directories(tmp_path / "b", "ws-b"), step_id="step-b"))
        done = await snapshot_events(js, 2, timeout=30)
    await repository.close()
    assert len(done) == 2 and all(isinstance(e, SnapshotCompleted) for e in done)
    assert seen_together == ["train before ws-a", "train before ws-b"]


async def test_no_more_volumes_than_the_limit_are_snapshotted_at_once(
    settings_for: Callable[..., SnapshotterSettings], js: JetStreamContext, tmp_path: Path
) -> None:
    settings = settings_for(snapshot_concurrency=2)
    release = asyncio.Event()

    async def hold(progress: Callable[[Progress], None]) -> None:
        await release.wait()

    repository = ObservedRepository(settings.repository_url, settings.resolved_cache_dir, hold)
    three = directories(tmp_path / "step", "ws", "data-1", "data-2")
    two = directories(tmp_path / "notebook", "nb-ws", "nb-data")
    async with running(build(settings, repository=repository)):
        await bus.publish(js, StepStarted.make(step=step(), node=NODE, volumes=three, started_at=datetime.now(UTC)))
        await bus.publish(
            js,
            RunStarted.make(
                run=RUN, run_name="r", pipeline_name="p", node=NODE, volumes=two, started_at=datetime.now(UTC)
            ),
        )
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:  # both events are being handled
            pending = [(await js.consumer_info(streams.PIPELINE.name, d)).num_ack_pending for d in (STEPS, RUNS)]
            if pending == [1, 1] and repository.active >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # time enough for five volumes to start if nothing held them back
        at_once = repository.active
        release.set()
        done = await snapshot_events(js, 5, timeout=30)
    await repository.close()
    assert at_once == 2
    assert repository.peak == 2
    assert sorted(e.volume.name for e in done) == ["data-1", "data-2", "nb-data", "nb-ws", "ws"]
