"""The store engine: content-addressed, de-duplicated snapshots of directory trees (see docs/format.md).

In layers, each importing only those below it: ``commands`` (``rok repo``, ``rok snapshot``); the operations on
a repository, one module each — ``archiver`` (:func:`snapshot`), ``restorer`` (:func:`restore`), ``checker``
(:func:`check`), ``gc`` (:func:`collect_garbage`), ``differ`` (:func:`diff`); the ``repository`` layer
(:class:`Repository`: backends, config, packs, index, manifests and records, locks, caches); and plain values and
helpers (``models``, ``errors``, ``chunker``, ``xattrs``, ``memory``).
"""

from rokstore.archiver import snapshot
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
    SnapshotNotFound,
    StoreError,
    StoreUnavailable,
    TargetNotEmpty,
    UnsafePath,
    UnsupportedFormat,
)
from rokstore.gc import collect_garbage
from rokstore.models import (
    CheckReport,
    GcReport,
    Problem,
    Progress,
    RestoreStats,
    SnapshotDiff,
    SnapshotInfo,
    SnapshotStats,
)
from rokstore.repository import Repository, init_repository, open_repository
from rokstore.restorer import restore

__all__ = [
    "AccessDenied",
    "CheckReport",
    "CorruptData",
    "GcReport",
    "InvalidRepositoryUrl",
    "ObjectNotFound",
    "Problem",
    "Progress",
    "Repository",
    "RepositoryExists",
    "RepositoryLocked",
    "RepositoryNotFound",
    "RestoreStats",
    "SnapshotDiff",
    "SnapshotInfo",
    "SnapshotNotFound",
    "SnapshotStats",
    "StoreError",
    "StoreUnavailable",
    "TargetNotEmpty",
    "UnsafePath",
    "UnsupportedFormat",
    "check",
    "collect_garbage",
    "diff",
    "init_repository",
    "open_repository",
    "restore",
    "snapshot",
]
