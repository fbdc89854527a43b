"""The plain values the store engine hands back: statistics, listings, reports and progress."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class _AsDict:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Progress(_AsDict):
    """A cheap progress report: called often, from the event loop's thread."""

    phase: str  # "scan", "upload", "commit", "restore", "done"
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0


@dataclass(frozen=True)
class SnapshotStats(_AsDict):
    snapshot_id: str
    files: int
    dirs: int
    bytes_scanned: int  # total logical size of the regular files
    bytes_read: int  # bytes actually read from disk (unchanged files are not read)
    bytes_new: int  # logical bytes of chunks the repository did not hold yet
    bytes_uploaded: int  # bytes written to storage (packs of data and trees, index, record)
    seconds: float
    incomplete: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cache_key: str = ""
    files_opened: int = 0


@dataclass(frozen=True)
class RestoreStats(_AsDict):
    snapshot_id: str
    files: int
    bytes: int
    seconds: float
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SnapshotInfo(_AsDict):
    id: str
    time: str  # ISO 8601, UTC
    hostname: str
    path: str
    tags: dict[str, str]
    files: int
    dirs: int
    bytes: int  # logical size of the files
    bytes_new: int
    incomplete: bool
    tree: str  # the root directory's tree id


@dataclass(frozen=True)
class SnapshotDiff(_AsDict):
    a: str
    b: str
    added: list[str]
    removed: list[str]
    changed: list[str]


@dataclass(frozen=True)
class Problem(_AsDict):
    # missing-pack, dangling-index-entry, missing-chunk, missing-tree, corrupt-tree, corrupt-chunk, corrupt-pack
    kind: str
    object: str
    message: str
    snapshots: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CheckReport(_AsDict):
    ok: bool
    problems: list[Problem]
    snapshots: int
    packs: int
    chunks: int
    bytes_read: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GcReport(_AsDict):
    dry_run: bool
    snapshots: int
    packs_deleted: int
    packs_repacked: int
    packs_written: int
    bytes_freed: int
    chunks_kept: int
    chunks_deleted: int
    index_files_rewritten: int
    seconds: float
    snapshots_forgotten: int = 0  # records removed: the catalog (the registry) forgot them
    orphans_removed: int = 0  # records removed: never recorded, and older than the grace period
    orphans_kept: int = 0  # never recorded, but younger than the grace period: perhaps still being recorded


@dataclass(frozen=True)
class RepairReport(_AsDict):
    packs: int  # packs in storage
    packs_read: int  # packs whose header was read (not already described by the index)
    chunks: int  # chunks the new index names
    entries_dropped: int  # index entries that pointed at missing packs
    index_files_removed: int
    index_written: str  # id of the new index file ("" when there was nothing to index)
    warnings: list[str] = field(default_factory=list)  # one line per pack whose header could not be read


@dataclass(frozen=True)
class LockInfo(_AsDict):
    key: str  # locks/<kind>-<random>
    kind: str  # shared (snapshot, restore, check) or exclusive (gc, repair-index)
    host: str
    pid: int
    age: float  # seconds since its holder last refreshed it
    stale: str  # why it is stale ("" while it is held): its holder stopped refreshing it, or its process is gone
