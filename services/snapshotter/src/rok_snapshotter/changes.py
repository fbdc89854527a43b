"""What a volume's new snapshot changed since the volume's previous one: the bounded summary sent with it.

The previous snapshot of a volume is the latest one any snapshotter took of the same content (the volume's
``cache_key``: the PV in a cluster, the path locally) into the same repository; :class:`Latest` remembers it (the
snapshotter's records bucket, kept as long as its entries live: a volume not snapshotted for longer than that
counts as snapshotted for the first time).
The summary is computed by the store engine's diff, which reads only the trees that differ. A summary that cannot be
computed (the store did not answer) is left out rather than failing the snapshot: the snapshot itself is stored.
"""

from __future__ import annotations

import logging
from typing import Protocol

from rokcommon.events import SnapshotChanges
from rokstore import SnapshotDiff

log = logging.getLogger(__name__)


class Latest(Protocol):
    """The last snapshot taken of each volume, per repository."""

    async def latest(self, repository: str, cache_key: str) -> str | None: ...
    async def remember(self, repository: str, cache_key: str, snapshot_id: str) -> None: ...


class Differ(Protocol):
    """What compares two snapshots of the repository (the store engine's diff, reading only the trees that differ)."""

    async def diff(self, a: str, b: str) -> SnapshotDiff: ...


async def changes_since(store: Differ, parent: str | None, snapshot_id: str) -> SnapshotChanges | None:
    """The summary of ``snapshot_id`` against ``parent`` (None: a first snapshot, nothing to compare with)."""
    if parent is None:
        return SnapshotChanges(parent=None)
    if parent == snapshot_id:
        return SnapshotChanges(parent=parent)
    try:
        d = await store.diff(parent, snapshot_id)
    except Exception as error:  # the snapshot is stored; only its summary is missing
        reason = f"{type(error).__name__}: {error}"
        log.warning("no change summary for snapshot %s against %s: %s", snapshot_id, parent, reason)
        return None
    return SnapshotChanges.between(parent, list(d.added), list(d.removed), list(d.changed))
