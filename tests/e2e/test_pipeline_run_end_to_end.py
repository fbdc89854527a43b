"""A three-step run over two volumes, through the real services in their own processes: every version is
recorded with its lineage and tags, and the state after a step restores byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from rokcommon.events import RestoreCompleted
from rokcommon.registry_client import Version

from .system import NAMESPACE, PipelineRun, System, eventually, tree

pytestmark = pytest.mark.slow


def volumes(root: Path) -> dict[str, Path]:
    workspace, data = root / "workspace", root / "data"
    (workspace / "src").mkdir(parents=True)
    data.mkdir()
    (workspace / "src" / "train.py").write_text("print('training')\n")
    (workspace / "requirements.txt").write_text("numpy\n")
    (data / "raw.csv").write_text("".join(f"{i},{i * i}\n" for i in range(5000)))
    return {"workspace": workspace, "data": data}


def members(version: Version | None) -> list[str]:
    assert version is not None
    return [m.volume for m in version.members]


async def test_a_three_step_run_is_recorded_with_its_lineage_and_a_step_restores_byte_identical(
    system: System, tmp_path: Path
) -> None:
    await system.start()
    vols = volumes(tmp_path / "volumes")
    ws, data = vols["workspace"], vols["data"]
    run = PipelineRun(system, vols)

    def prepare() -> None:
        (data / "clean.csv").write_text((data / "raw.csv").read_text().replace(",", ";"))
        (data / "raw.csv").unlink()

    def train() -> None:
        (ws / "model.bin").write_bytes(bytes(range(256)) * 4096)
        (ws / "src" / "train.py").write_text("print('trained')\n")
        (ws / "src" / "run.sh").write_text("#!/bin/sh\n")
        (ws / "src" / "run.sh").chmod(0o755)

    def evaluate() -> None:
        (ws / "metrics.json").write_text('{"accuracy": 0.9}\n')
        (data / "clean.csv").write_text("replaced\n")

    await run.begin()
    steps = [
        await run.play_step(name, effect)
        for name, effect in (("prepare", prepare), ("train", train), ("evaluate", evaluate))
    ]
    await run.end()

    lineage = await system.lineage(run.commits[("initial", "initial")])
    assert lineage.file.run_id == run.run.run_id
    assert lineage.initial is not None and lineage.initial.tags == ("initial",)
    assert members(lineage.initial) == ["workspace", "data"]
    assert [s.step_id for s in lineage.steps] == [s.step_id for s in steps]
    assert [s.name for s in lineage.steps] == ["prepare", "train", "evaluate"]
    for recorded in lineage.steps:
        assert recorded.before is not None and recorded.after is not None
        assert (recorded.before.phase, recorded.after.phase) == ("before", "after")
        assert members(recorded.before) == members(recorded.after) == ["workspace", "data"]
        assert recorded.before.status == recorded.after.status == "complete"
        assert recorded.outcome == "succeeded"
        assert "failed" not in recorded.after.tags
    # the versions are the ones announced, and their snapshots differ exactly where the steps changed things
    for step, recorded in zip(steps, lineage.steps, strict=True):
        assert recorded.after is not None
        assert recorded.after.url == run.commits[(step.name, "after")].url

    # the final tag lands on the run's last after-version once the run finished
    async def final_tagged() -> bool:
        latest = await system.lineage(run.commits[("initial", "initial")])
        return latest.steps[-1].after is not None and "final" in latest.steps[-1].after.tags

    assert await eventually(final_tagged, 15), "the run's last after-version was not tagged final"

    # restore the state after step 2 ("train"): both volumes, byte for byte what they held then
    target = tmp_path / "restored"
    outcome = await system.restore(run.commits[("train", "after")].url, target)
    assert isinstance(outcome, RestoreCompleted), outcome
    assert sorted(p.name for p in target.iterdir()) == ["data", "workspace"]
    held = run.held[("train", "after")]
    assert tree(target / "workspace") == held["workspace"]
    assert tree(target / "data") == held["data"]
    assert tree(target / "workspace") != tree(ws)  # the volumes moved on since; the restore did not follow them
    assert outcome.namespace == NAMESPACE
