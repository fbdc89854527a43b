"""The store repository this node writes to, opened (or created) once and shared by every snapshot."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from rokcommon.errors import RokError, TemporaryError
from rokstore import (
    Progress,
    Repository,
    RepositoryExists,
    RepositoryNotFound,
    SnapshotDiff,
    SnapshotStats,
    diff,
    init_repository,
    open_repository,
    snapshot,
)

log = logging.getLogger(__name__)


class RepositoryHandle:
    """Opens the repository at ``url`` on first use, creating it if it does not exist yet."""

    def __init__(self, url: str, *, cache_dir: Path | None = None) -> None:
        self.url = url
        self.cache_dir = cache_dir
        self._repo: Repository | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Repository:
        if self._repo is None:
            async with self._lock:
                if self._repo is None:
                    self._repo = await self._open()
        return self._repo

    async def snapshot(
        self, path: Path, *, tags: dict[str, str], cache_key: str, progress: Callable[[Progress], None]
    ) -> SnapshotStats:
        """Snapshot the directory ``path`` into the repository (opened first if it is not yet)."""
        return await snapshot(await self.get(), path, tags=tags, cache_key=cache_key, progress=progress)

    async def diff(self, a: str, b: str) -> SnapshotDiff:
        """What changed from snapshot ``a`` to ``b`` (paths added, removed and changed)."""
        return await diff(await self.get(), a, b)

    async def _open(self) -> Repository:
        try:
            try:
                repo = await open_repository(self.url, cache_dir=self.cache_dir)
            except RepositoryNotFound:
                try:
                    repo = await init_repository(self.url, cache_dir=self.cache_dir)
                    log.info("created repository %s", self.url)
                except RepositoryExists:  # another node created it meanwhile
                    repo = await open_repository(self.url, cache_dir=self.cache_dir)
        except RokError:
            raise
        except Exception as error:
            raise TemporaryError(
                f"cannot open the repository at {self.url}: {type(error).__name__}: {error}"
            ) from error
        log.info("using repository %s", self.url, extra={"repository_id": repo.id})
        return repo

    async def close(self) -> None:
        if self._repo is not None:
            await self._repo.close()
            self._repo = None
