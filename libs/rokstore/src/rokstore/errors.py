"""Failures of the store engine, each a one-sentence message naming the value and what to do."""

from __future__ import annotations

from rokcommon.errors import InvalidRequest, NotFound, PermanentError, RokError, TemporaryError


class StoreError(RokError):
    """Base of every store failure."""


class StorePermanentError(StoreError, PermanentError):
    """A store failure that retrying cannot fix."""


class StoreUnavailable(StoreError, TemporaryError):
    """The object store cannot be reached right now (connection refused, timeout, 5xx): retry later."""


class RepositoryNotFound(StorePermanentError, NotFound):
    """No repository at the URL."""


class RepositoryExists(StorePermanentError):
    """``init`` of a URL that already holds a repository."""


class UnsupportedFormat(StorePermanentError):
    """The repository was written in a format version this code does not know."""


class AccessDenied(StorePermanentError):
    """Credentials were rejected by the object store."""


class InvalidRepositoryUrl(StorePermanentError, InvalidRequest):
    """A URL that is neither ``file:///abs/path`` nor ``s3://bucket/prefix``."""


class SnapshotNotFound(StorePermanentError, NotFound):
    """No snapshot matches the id or prefix the user gave (or the prefix is ambiguous)."""


class CorruptData(StorePermanentError):
    """Bytes read back do not match their BLAKE3 id, or an object is missing or malformed."""


class UnsafePath(CorruptData):
    """A snapshot entry would escape the restore target (``..``, absolute path, path under a symlink)."""


class RestoreFailed(StorePermanentError):
    """The restore could not write a path of its target (no space, a file too large for the file system, ...)."""


class TargetChanged(RestoreFailed):
    """A path the restore created was replaced while it ran (a directory swapped for a symlink, say)."""


class TargetNotEmpty(StorePermanentError):
    """Restore refuses to write into a directory that already holds something."""


class RepositoryLocked(StoreError, TemporaryError):
    """Another process holds a conflicting lock (gc vs. snapshot); retry when it is done."""


class MissingBlob(CorruptData):
    """A blob (a tree or a chunk) a snapshot uses is in no pack that exists, as far as the index says."""

    def __init__(self, blob: bytes, what: str = "blob", where: str = "") -> None:
        super().__init__(
            f"{what} {blob.hex()}{where} is not in any pack that exists; run 'rok repo check' to see what is affected"
        )
        self.blob = blob
        self.what = what


class ObjectNotFound(CorruptData):
    """An object the repository refers to is missing from storage."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} is missing from the repository; run 'rok repo check' to see what is affected")
        self.key = key
