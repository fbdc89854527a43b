"""Where a repository's objects live: a local directory or an S3 bucket, behind one small async interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlparse

from rokstore.errors import InvalidRepositoryUrl


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch, as the storage reports it


Data = bytes | bytearray  # what a read returns: a large body may arrive in a buffer it was read into, not copied


class Backend(Protocol):
    url: str

    async def get(self, key: str) -> Data: ...

    async def get_range(self, key: str, offset: int, length: int) -> Data: ...

    async def put(self, key: str, data: bytes | memoryview, *, durable: bool = True) -> None: ...

    async def put_file(self, key: str, path: str) -> None:
        """Store the file ``path`` as object ``key``: a local backend renames it into place (it takes only files of
        its ``spool_dir()``, on its own file system), S3 uploads it; the caller removes what is left."""

    async def delete(self, key: str) -> None: ...

    async def list(self, prefix: str) -> list[ObjectInfo]: ...

    async def exists(self, key: str) -> bool: ...

    async def prepare(self) -> None:
        """Create the container (directory, bucket) if it does not exist."""

    async def close(self) -> None: ...


def open_backend(url: str) -> Backend:
    """The backend for ``file:///abs/path`` or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise InvalidRepositoryUrl(f"repository URL {url!r} must be file:///absolute/path")
        from rokstore.repository.backends.file import FileBackend

        return FileBackend(url, parsed.path)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidRepositoryUrl(f"repository URL {url!r} names no bucket; use s3://bucket/prefix")
        from rokstore.repository.backends.s3 import S3Backend

        return S3Backend(url, parsed.netloc, parsed.path.strip("/"))
    raise InvalidRepositoryUrl(
        f"repository URL {url!r} is not supported; use file:///absolute/path or s3://bucket/prefix"
    )


__all__ = ["Backend", "ObjectInfo", "open_backend"]
