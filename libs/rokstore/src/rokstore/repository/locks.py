"""Lease locks that need no conditional writes: shared for snapshots and restores, exclusive for gc.

A lock is an object ``locks/<kind>-<random>`` that its holder rewrites every ``lease/4`` seconds; one whose
last write is older than ``2 × lease`` is stale (its holder died) and is ignored and removed by gc.

Acquiring is *write, then list*: a shared holder proceeds only if its listing (made after its own lock was
written) shows no fresh exclusive lock, and gc proceeds only if its listing shows no fresh lock but its own.
With read-after-write consistent listings (S3, rclone, a local directory) two such parties can never both
proceed: whoever listed first had not yet been seen, so the other's later listing sees it. A shared holder
that meets an exclusive lock removes its own and waits; gc keeps its lock while it waits, so a stream of new
snapshots cannot starve it. A second gc backs off. Before committing, a snapshot checks that its lock still
exists (gc removes locks it judged stale), so a writer that was paused past its lease aborts instead of
committing a snapshot whose data gc may have removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time

from rokstore.errors import ObjectNotFound, RepositoryLocked
from rokstore.repository.backends import Backend, ObjectInfo


def lease_seconds() -> float:
    return float(os.environ.get("ROK_LOCK_LEASE", "120"))


def wait_seconds() -> float:
    return float(os.environ.get("ROK_LOCK_WAIT", "900"))


class Lock:
    def __init__(self, backend: Backend, kind: str) -> None:
        self.backend = backend
        self.kind = kind
        self.key = f"locks/{kind}-{secrets.token_hex(12)}"
        self._refresher: asyncio.Task[None] | None = None

    async def _write(self) -> None:
        body = {"kind": self.kind, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        await self.backend.put(self.key, json.dumps(body).encode(), durable=False)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(lease_seconds() / 4)
            with contextlib.suppress(Exception):
                await self._write()

    async def _others(self) -> list[ObjectInfo]:
        now = time.time()
        stale_after = 2 * lease_seconds()
        return [
            info
            for info in await self.backend.list("locks/")
            if info.key != self.key and now - info.mtime < stale_after
        ]

    async def acquire(self) -> Lock:
        deadline = time.monotonic() + wait_seconds()
        while True:
            await self._write()
            others = await self._others()
            if self.kind == "shared":
                if not any(o.key.startswith("locks/exclusive-") for o in others):
                    break
                await self.backend.delete(self.key)
                if time.monotonic() > deadline:
                    raise RepositoryLocked(f"gc holds the repository {self.backend.url}; retry when it is done")
                await asyncio.sleep(1.0)
                continue
            # exclusive
            if any(o.key.startswith("locks/exclusive-") for o in others):
                await self.backend.delete(self.key)
                raise RepositoryLocked(f"another gc is running on {self.backend.url}; retry when it is done")
            while others:
                if time.monotonic() > deadline:
                    await self.backend.delete(self.key)
                    raise RepositoryLocked(
                        f"snapshots or restores are running on {self.backend.url}; retry gc when they are done"
                    )
                await asyncio.sleep(0.5)
                await self._write()
                others = await self._others()
            break
        self._refresher = asyncio.create_task(self._refresh_forever())
        return self

    async def still_held(self) -> bool:
        try:
            await self.backend.get(self.key)
            return True
        except ObjectNotFound:
            return False

    async def release(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refresher
            self._refresher = None
        with contextlib.suppress(Exception):
            await self.backend.delete(self.key)


async def remove_stale_locks(backend: Backend) -> int:
    now = time.time()
    stale = [i for i in await backend.list("locks/") if now - i.mtime >= 2 * lease_seconds()]
    for info in stale:
        await backend.delete(info.key)
    return len(stale)
