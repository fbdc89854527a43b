"""The store engine: content-addressed, de-duplicated snapshots of directory trees (see docs/format.md).

In layers, each importing only those below it: ``commands`` (``rok repo``, ``rok snapshot``); the operations on
a repository, one module each — ``archiver`` (:func:`snapshot`), ``restorer`` (:func:`restore`), ``checker``
(:func:`check`), ``gc`` (:func:`collect_garbage`), ``differ`` (:func:`diff`), ``repairer`` (:func:`repair_index`),
``browse`` (:class:`SnapshotView`: one path, one directory, a file's bytes);
the ``repository`` layer (:class:`Repository`: backends, config, packs, index, manifests and records, locks,
caches); the file-system side of a restore (``staging``, ``confined``: every path written through descriptors,
never through a symlink); and plain values and helpers (``models``, ``errors``, ``chunker``, ``xattrs``,
``memory``).
"""

from rokstore.archiver import snapshot
from rokstore.browse import ChunkCache, Node, NotADirectory, NotAFile, PathNotFound, SnapshotView
from rokstore.checker import check
from rokstore.differ import diff
from rokstore.errors import (
    AccessDenied,
    CorruptData,
    InvalidRepositoryUrl,
    ObjectNotFound,
    RepositoryExists,
    RepositoryLocked,
    RepositoryNotFound,
    RestoreFailed,
    SnapshotNotFound,
    StoreError,
    StoreUnavailable,
    TargetChanged,
    TargetNotEmpty,
    UnsafePath,
    UnsupportedFormat,
)
from rokstore.gc import SnapshotCatalog, collect_garbage
from rokstore.models import (
    CheckReport,
    GcReport,
    LockInfo,
    Problem,
    Progress,
    RepairReport,
    RestoreStats,
    SnapshotDiff,
    SnapshotInfo,
    SnapshotStats,
)
from rokstore.repairer import repair_index
from rokstore.repository import Repository, init_repository, open_repository
from rokstore.repository.locks import list_locks, remove_locks
from rokstore.restorer import restore

__all__ = [
    "AccessDenied",
    "CheckReport",
    "ChunkCache",
    "CorruptData",
    "GcReport",
    "InvalidRepositoryUrl",
    "LockInfo",
    "Node",
    "NotADirectory",
    "NotAFile",
    "ObjectNotFound",
    "PathNotFound",
    "Problem",
    "Progress",
    "RepairReport",
    "Repository",
    "RepositoryExists",
    "RepositoryLocked",
    "RepositoryNotFound",
    "RestoreFailed",
    "RestoreStats",
    "SnapshotCatalog",
    "SnapshotDiff",
    "SnapshotInfo",
    "SnapshotNotFound",
    "SnapshotStats",
    "SnapshotView",
    "StoreError",
    "StoreUnavailable",
    "TargetChanged",
    "TargetNotEmpty",
    "UnsafePath",
    "UnsupportedFormat",
    "check",
    "collect_garbage",
    "diff",
    "init_repository",
    "list_locks",
    "open_repository",
    "remove_locks",
    "repair_index",
    "restore",
    "snapshot",
]
