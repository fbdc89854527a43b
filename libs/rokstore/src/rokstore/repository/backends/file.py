"""The ``file://`` backend: one file per object, written to a temporary name and renamed into place."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from rokstore.errors import AccessDenied, ObjectNotFound, StoreError
from rokstore.repository.backends import ObjectInfo

_TMP_PREFIX = ".tmp."


class FileBackend:
    def __init__(self, url: str, root: str) -> None:
        self.url = url
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key

    # Synchronous parts, run in threads.

    def _get(self, key: str, offset: int = 0, length: int = -1) -> bytes:
        try:
            with open(self._path(key), "rb", buffering=0) as f:
                if offset:
                    f.seek(offset)
                return f.read() if length < 0 else f.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except PermissionError as error:
            raise AccessDenied(f"cannot read {self._path(key)}: {error.strerror}; check permissions") from None

    def _put(self, key: str, data: bytes | memoryview, durable: bool) -> None:
        path = self._path(key)
        tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, path)

    def _list(self, prefix: str) -> list[ObjectInfo]:
        base = self._path(prefix)
        out: list[ObjectInfo] = []
        if not base.is_dir():
            return out
        stack = [base]
        while stack:
            directory = stack.pop()
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.name.startswith(_TMP_PREFIX):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    else:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        key = Path(entry.path).relative_to(self.root).as_posix()
                        out.append(ObjectInfo(key, st.st_size, st.st_mtime))
        return out

    # The async interface.

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get, key)

    async def get_range(self, key: str, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(self._get, key, offset, length)

    async def put(self, key: str, data: bytes | memoryview, *, durable: bool = True) -> None:
        await asyncio.to_thread(self._put, key, data, durable)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await asyncio.to_thread(self._list, prefix)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).exists)

    async def prepare(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create repository directory {self.root}: {error.strerror}") from None

    async def close(self) -> None:
        return None

    def spool_dir(self) -> Path:
        """Where packs are written while they fill (skipped by listings), on the repository's file system."""
        return self.root / "packs"

    async def put_file(self, key: str, path: str) -> None:
        await asyncio.to_thread(self._place, path, key)

    def _place(self, path: str, key: str) -> None:
        """Put a file written in :meth:`spool_dir` in place as object ``key``, durably."""
        target = self._path(key)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(path, target)
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)

    def get_sync(self, key: str, offset: int = 0, length: int = -1) -> bytes:
        """For worker threads that read packs without a trip through the event loop."""
        return self._get(key, offset, length)
