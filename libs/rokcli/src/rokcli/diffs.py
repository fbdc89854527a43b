"""What changed between two versions, volume by volume: ``rok diff`` and the web page's lineage view.

Volumes are matched by name; each pair of snapshots is compared by the store engine (``rokstore.diff``), which
reads only the two manifests. A volume that only one version holds is reported as added or removed whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rokcommon.errors import PermanentError
from rokcommon.registry_contract import Member
from rokstore import Repository, diff, open_repository


@dataclass(frozen=True)
class VolumeChanges:
    volume: str
    a: str | None  # snapshot id in the first version (None: the volume is new)
    b: str | None  # snapshot id in the second version (None: the volume is gone)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        return self.a == self.b or (
            self.a is not None and self.b is not None and not (self.added or self.removed or self.changed)
        )

    @property
    def count(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "unchanged": self.unchanged}


async def diff_members(a: Sequence[Member], b: Sequence[Member]) -> list[VolumeChanges]:
    """Compare two versions' members; the result follows the volume order of ``b``, then volumes only in ``a``."""
    by_name_a = {m.volume: m for m in a}
    by_name_b = {m.volume: m for m in b}
    names = [m.volume for m in b] + [m.volume for m in a if m.volume not in by_name_b]
    repos: dict[str, Repository] = {}
    try:

        async def repo(url: str) -> Repository:
            if url not in repos:
                repos[url] = await open_repository(url)
            return repos[url]

        async def one(name: str) -> VolumeChanges:
            ma, mb = by_name_a.get(name), by_name_b.get(name)
            if ma is None:
                return VolumeChanges(name, None, mb.snapshot_id if mb else None)
            if mb is None:
                return VolumeChanges(name, ma.snapshot_id, None)
            if ma.snapshot_id == mb.snapshot_id and ma.repository == mb.repository:
                return VolumeChanges(name, ma.snapshot_id, mb.snapshot_id)
            if ma.repository != mb.repository:
                raise PermanentError(
                    f"cannot compare volume {name!r}: its snapshots are in two repositories "
                    f"({ma.repository} and {mb.repository})"
                )
            d = await diff(await repo(mb.repository), ma.snapshot_id, mb.snapshot_id)
            return VolumeChanges(name, ma.snapshot_id, mb.snapshot_id, list(d.added), list(d.removed), list(d.changed))

        # Open each repository once, before the volumes are compared in parallel.
        for url in {m.repository for m in (*a, *b)}:
            await repo(url)
        return list(await asyncio.gather(*(one(n) for n in names)))
    finally:
        for r in repos.values():
            await r.close()
