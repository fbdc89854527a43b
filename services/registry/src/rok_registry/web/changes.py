"""What each step changed, from the summaries recorded with its snapshots: the registry reads no store.

A step's after-snapshot of a volume carries a summary against that volume's previous snapshot, which is the
step's before-snapshot when nothing else snapshotted the volume in between. When it is not (or no summary was
recorded), the page says so and links to the full comparison, which a service that holds the store computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rokcommon.events import SnapshotChanges
from rokcommon.registry_contract import Member


@dataclass(frozen=True)
class StepVolumeChanges:
    """One volume of a step: its before- and after-snapshot ids (None: not in that version) and its summary."""

    volume: str
    a: str | None
    b: str | None
    summary: SnapshotChanges | None = None  # None: no summary against the before-snapshot is recorded

    @property
    def unchanged(self) -> bool:
        return self.a == self.b or (self.summary is not None and self.summary.count == 0)

    @property
    def recorded(self) -> bool:
        return self.summary is not None

    @property
    def more(self) -> int:
        """Paths the summary counts but does not list."""
        s = self.summary
        if s is None:
            return 0
        return s.count - len(s.added) - len(s.removed) - len(s.changed)


def step_changes(before: Sequence[Member], after: Sequence[Member]) -> list[StepVolumeChanges]:
    """Each volume in the after-version's order, then those only the before-version holds."""
    by_name_before = {m.volume: m for m in before}
    by_name_after = {m.volume: m for m in after}
    result: list[StepVolumeChanges] = []
    for m in after:
        was = by_name_before.get(m.volume)
        if was is None:
            result.append(StepVolumeChanges(m.volume, None, m.snapshot_id))
            continue
        against_before = m.changes is not None and m.changes.parent == was.snapshot_id
        result.append(
            StepVolumeChanges(m.volume, was.snapshot_id, m.snapshot_id, m.changes if against_before else None)
        )
    result += [StepVolumeChanges(m.volume, m.snapshot_id, None) for m in before if m.volume not in by_name_after]
    return result
