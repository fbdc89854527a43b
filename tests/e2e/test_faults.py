"""Faults, each against the real processes: a snapshotter killed mid-snapshot, a nats-server restarted mid-run,
a registry down while snapshots complete — and in each case the lineage ends up whole, each version recorded
once, and what was stored restores byte for byte."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from rokcommon.events import RestoreCompleted
from rokcommon.registry_contract import Lineage

from .system import PipelineRun, System, eventually, tree

pytestmark = pytest.mark.slow

BIG = 128 * 1024 * 1024  # 8 packs: the first is stored long before the snapshot ends


def small_volumes(root: Path) -> dict[str, Path]:
    paths = {"workspace": root / "workspace", "data": root / "data"}
    for name, path in paths.items():
        (path / "dir").mkdir(parents=True)
        (path / "dir" / "file.txt").write_text(f"{name} at the start\n")
    return paths


def assert_whole(lineage: Lineage, steps: list[str]) -> None:
    """The initial version and a before and an after version per step, each complete and holding both volumes."""
    assert lineage.initial is not None and lineage.initial.status == "complete"
    assert lineage.initial.tags == ("initial",)
    assert [s.name for s in lineage.steps] == steps
    for step in lineage.steps:
        for version in (step.before, step.after):
            assert version is not None, step
            assert version.status == "complete", version
            assert [m.volume for m in version.members] == ["workspace", "data"]
    last = lineage.steps[-1].after
    assert last is not None and "final" in last.tags


async def test_a_snapshotter_killed_mid_snapshot_records_the_version_once_after_its_restart(
    system: System, tmp_path: Path
) -> None:
    vols = small_volumes(tmp_path / "volumes")
    with open(vols["data"] / "big.bin", "wb") as out:  # big enough that the snapshot is mid-way when killed
        for _ in range(BIG // (8 << 20)):
            out.write(os.urandom(8 << 20))
    await system.start()
    run = PipelineRun(system, vols)
    run.remember("initial", "initial")
    await system.publish(run.started())

    packs = system.repo_dir / "packs"

    async def first_pack_stored() -> bool:
        return packs.is_dir() and any(p.is_file() for p in packs.rglob("*"))

    assert await eventually(first_pack_stored, 30, every=0.01), "no pack was uploaded"
    await system.snapshotter.kill()
    data_done = [s for s in system.snapshots_of(run.run, None, "initial") if s.volume.name == "data"]
    assert data_done == [], "the snapshot of the big volume finished before the kill: the test proves nothing"

    await system.snapshotter.start()
    commit = await run.wait(None, "initial", timeout=60)
    await run.end()
    lineage = await system.lineage(commit)
    assert lineage.initial is not None and lineage.initial.id == commit.version_id
    assert [m.volume for m in lineage.initial.members] == ["workspace", "data"]
    versions = await system.versions(commit)
    assert [v.id for v in versions] == [commit.version_id]  # recorded exactly once

    target = tmp_path / "restored"
    outcome = await system.restore(commit.url, target, timeout=90)
    assert isinstance(outcome, RestoreCompleted), outcome
    # one snapshot per volume reached the bus: the killed attempt published nothing
    assert sorted(s.volume.name for s in system.snapshots_of(run.run, None, "initial")) == ["data", "workspace"]
    assert tree(target / "data") == run.held[("initial", "initial")]["data"]
    assert tree(target / "workspace") == run.held[("initial", "initial")]["workspace"]


async def test_a_nats_server_restarted_mid_run_loses_no_event(system: System, tmp_path: Path) -> None:
    vols = small_volumes(tmp_path / "volumes")
    await system.start()
    run = PipelineRun(system, vols)
    await run.begin()
    await run.play_step("prepare", lambda: (vols["data"] / "prepared.txt").write_text("prepared\n"))

    # step 2 starts, and the server goes away while its snapshots are taken and recorded
    train = run.step("train")
    run.remember("train", "before")
    await system.publish(run.step_started(train))
    await asyncio.to_thread(system.nats.restart)
    await run.wait(train, "before", timeout=60)
    (vols["workspace"] / "model.txt").write_text("trained\n")
    run.remember("train", "after")
    await system.publish(run.step_finished(train))
    await run.wait(train, "after", timeout=60)
    await run.play_step("evaluate", lambda: (vols["workspace"] / "score.txt").write_text("0.9\n"))
    await run.end()

    async def whole() -> bool:
        try:
            assert_whole(await system.lineage(run.commits[("initial", "initial")]), ["prepare", "train", "evaluate"])
        except AssertionError:
            return False
        return True

    assert await eventually(whole, 20)
    target = tmp_path / "restored"
    outcome = await system.restore(run.commits[("train", "after")].url, target)
    assert isinstance(outcome, RestoreCompleted), outcome
    assert {name: tree(target / name) for name in vols} == run.held[("train", "after")]


async def test_a_registry_down_while_snapshots_complete_records_the_whole_lineage_once_back(
    system: System, tmp_path: Path
) -> None:
    vols = small_volumes(tmp_path / "volumes")
    await system.start()
    run = PipelineRun(system, vols)
    await run.begin()
    assert await system.registry.stop() == 0

    # a whole step and the run's end, while the registry is away: the snapshots complete regardless
    step = run.step("train")
    run.remember("train", "before")
    await system.publish(run.step_started(step))
    await system.until(lambda: len(system.snapshots_of(run.run, step, "before")) == 2, 30, "the before snapshots")
    (vols["workspace"] / "model.txt").write_text("trained\n")
    run.remember("train", "after")
    await system.publish(run.step_finished(step))
    await system.until(lambda: len(system.snapshots_of(run.run, step, "after")) == 2, 30, "the after snapshots")
    await run.end()
    assert (run.run.workflow_uid, step.step_id, "after") not in system.commits  # nobody recorded it yet

    await system.registry.start()
    await run.wait(step, "before")
    after = await run.wait(step, "after")

    async def whole() -> bool:
        try:
            assert_whole(await system.lineage(after), ["train"])
        except AssertionError:
            return False
        return True

    assert await eventually(whole, 20)
    lineage = await system.lineage(after)
    assert lineage.steps[0].after is not None and lineage.steps[0].after.id == after.version_id
    assert lineage.file.status == "succeeded"
