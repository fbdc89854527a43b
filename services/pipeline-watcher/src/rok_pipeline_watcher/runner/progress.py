"""What ``rok run`` says while it waits for a snapshot or a clone: one line per volume, with its bytes.

Two things reach the runner while it waits: the snapshotter's ``SnapshotCompleted`` / ``SnapshotFailed``, one
per volume as soon as that volume is stored (the version is committed only when all are), and the restorer's
``RestoreProgress`` for the clone of the notebook's volumes (core NATS, about once a second per volume).
:class:`ProgressLines` turns both into lines for a person; :func:`follow_progress` feeds it from the bus for one
run. A clone's progress is said at every tenth of a volume's bytes, so a long clone prints about ten lines
whatever its speed, and a short one no more than its last.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from nats.aio.msg import Msg
from pydantic import ValidationError
from rokcommon import bus, subjects
from rokcommon.events import RestoreProgress, SnapshotCompleted, SnapshotFailed
from rokcommon.humanize import size
from rokcommon.permissions import RUNNER
from rokcommon.settings import RokSettings

STEPS = 10  # a clone's volume is reported at each tenth of its bytes


class ProgressLines:
    """Per-volume progress of one run (its ``workflow_uid``), as lines given to ``report``."""

    def __init__(self, workflow_uid: str, report: Callable[[str], None]) -> None:
        self.workflow_uid = workflow_uid
        self.report = report
        self._said: dict[tuple[str, str], int] = {}  # (request, volume) → tenths already reported

    def snapshot_completed(self, event: SnapshotCompleted) -> None:
        if event.run.workflow_uid != self.workflow_uid:
            return
        s = event.stats
        self.report(
            f"{_version(event.step.name if event.step else None, event.phase)}: volume {event.volume.name} stored, "
            f"{s.files} files, {size(s.bytes_scanned)} ({size(s.bytes_new)} new, {size(s.bytes_uploaded)} uploaded) "
            f"in {s.seconds:.1f}s"
        )

    def snapshot_failed(self, event: SnapshotFailed) -> None:
        if event.run.workflow_uid != self.workflow_uid:
            return
        step = event.step.name if event.step else None
        self.report(f"{_version(step, event.phase)}: volume {event.volume.name} failed: {event.reason}")

    def restore_progress(self, progress: RestoreProgress) -> None:
        # the run's restores (the clone) are named after its workflow uid
        if not progress.request_id.startswith(self.workflow_uid):
            return
        total = progress.bytes_total
        tenths = STEPS if total <= 0 or progress.bytes_done >= total else progress.bytes_done * STEPS // total
        key = (progress.request_id, progress.volume)
        if key in self._said and tenths <= self._said[key]:
            return
        self._said[key] = tenths
        if tenths >= STEPS:
            self.report(f"clone: volume {progress.volume} done, {progress.files_done} files, {size(total)}")
        else:
            self.report(
                f"clone: volume {progress.volume} {size(progress.bytes_done)} of {size(total)} "
                f"({tenths * 100 // STEPS}%), {progress.files_done} files"
            )


def _version(step: str | None, phase: str) -> str:
    return "snapshot of the notebook's volumes" if step is None else f"{phase}-snapshot of step {step}"


@contextlib.asynccontextmanager
async def follow_progress(
    settings: RokSettings, workflow_uid: str, report: Callable[[str], None]
) -> AsyncIterator[ProgressLines]:
    """While inside, report the progress of run ``workflow_uid`` from the bus (a connection of its own)."""
    lines = ProgressLines(workflow_uid, report)
    nc = await bus.connect(settings, name="rok-run-progress", local_user=RUNNER)

    async def on_completed(msg: Msg) -> None:
        with contextlib.suppress(ValidationError, ValueError):
            lines.snapshot_completed(SnapshotCompleted.decode(msg.data))

    async def on_failed(msg: Msg) -> None:
        with contextlib.suppress(ValidationError, ValueError):
            lines.snapshot_failed(SnapshotFailed.decode(msg.data))

    async def on_progress(msg: Msg) -> None:
        with contextlib.suppress(ValidationError, ValueError):
            lines.restore_progress(RestoreProgress.model_validate_json(msg.data))

    try:
        await nc.subscribe(subjects.SNAPSHOT_COMPLETED, cb=on_completed)
        await nc.subscribe(subjects.SNAPSHOT_FAILED, cb=on_failed)
        await nc.subscribe(f"{subjects.RESTORE_PROGRESS}.>", cb=on_progress)
        await nc.flush()
        yield lines
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
