"""``rok run`` says what it waits for: every volume of every snapshot as it is stored, and the clone's bytes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rok_pipeline_watcher.runner.progress import ProgressLines
from rokcommon.events import RestoreProgress, RunRef, SnapshotCompleted, SnapshotStatsModel, VolumeRef

from .stack import Stack, local_stack


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A system of its own: the run recorded here is no business of the shared stack's tests."""
    with local_stack(tmp_path_factory.mktemp("rok-progress")) as stack:
        yield stack


def _pipeline(root: Path) -> Path:
    (root / "home").mkdir()
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    (root / "pipeline.yaml").write_text(
        "pipeline: progress\nexperiment: progress\nvolumes:\n"
        f"  - name: workspace\n    path: {root / 'home'}\n  - name: data\n    path: {root / 'data'}\n"
        "steps:\n  - name: touch\n    run: echo changed > out.txt\n"
    )
    return root / "pipeline.yaml"


def test_rok_run_prints_each_volume_of_each_snapshot_and_the_clone_as_they_are_done(
    own_stack: Stack, tmp_path: Path
) -> None:
    result = own_stack.rok("run", str(_pipeline(tmp_path)))
    assert result.code == 0, result.err
    lines = result.err.splitlines()
    for version in (
        "snapshot of the notebook's volumes",
        "before-snapshot of step touch",
        "after-snapshot of step touch",
    ):
        for volume in ("workspace", "data"):
            assert any(line.startswith(f"{version}: volume {volume} stored, ") for line in lines), result.err
    assert any(
        line.startswith("snapshot of the notebook's volumes: volume data stored, 1 files, 1.0 MiB") for line in lines
    )
    assert any(line.startswith("clone: volume data done, 1 files, 1.0 MiB") for line in lines), result.err
    # each line comes before the line that says the wait is over
    first_step = next(i for i, line in enumerate(lines) if line.startswith("step touch: running"))
    assert any(line.startswith("clone: volume workspace done") for line in lines[:first_step]), result.err


def _progress(done: int, total: int = 1000, request: str = "uid-1-clone") -> RestoreProgress:
    return RestoreProgress(
        request_id=request, volume="data", bytes_done=done, bytes_total=total, files_done=done // 100
    )


def test_a_clone_is_reported_at_each_tenth_of_its_bytes_and_once_when_done() -> None:
    said: list[str] = []
    lines = ProgressLines("uid-1", said.append)
    for done in (0, 50, 99, 100, 150, 420, 430, 1000, 1000):
        lines.restore_progress(_progress(done))
    lines.restore_progress(_progress(500, request="another-run-clone"))  # another run's restore: not ours
    assert said == [
        "clone: volume data 0 B of 1000 B (0%), 0 files",
        "clone: volume data 100 B of 1000 B (10%), 1 files",
        "clone: volume data 420 B of 1000 B (40%), 4 files",
        "clone: volume data done, 10 files, 1000 B",
    ]


def test_another_runs_snapshots_are_not_reported() -> None:
    said: list[str] = []
    event = SnapshotCompleted.make(
        run=RunRef(namespace="local", run_id="r", workflow_uid="someone-else"),
        step=None,
        phase="initial",
        volume=VolumeRef(name="workspace", role="workspace", path="/tmp/x"),
        volumes=("workspace",),
        repository="file:///tmp/repo",
        snapshot_id="0123456789abcdef",
        stats=SnapshotStatsModel(files=3, bytes_scanned=2048),
        node="n",
        taken_at=datetime.now(UTC),
    )
    ProgressLines("uid-1", said.append).snapshot_completed(event)
    assert said == []
    ProgressLines("someone-else", said.append).snapshot_completed(event)
    assert said == [
        "snapshot of the notebook's volumes: volume workspace stored, 3 files, 2.0 KiB (0 B new, 0 B uploaded) in 0.0s"
    ]
