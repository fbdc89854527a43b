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
import logging
import os
import secrets
import socket
import time

from rokstore.errors import ObjectNotFound, RepositoryLocked
from rokstore.models import LockInfo
from rokstore.repository.backends import Backend, ObjectInfo

log = logging.getLogger(__name__)


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
        told = False
        while True:
            await self._write()
            others = await self._others()
            if self.kind == "shared":
                blocking = [o.key for o in others if o.key.startswith("locks/exclusive-")]
                if not blocking:
                    break
                if not told:
                    told = True
                    log.warning(
                        "waiting for %s on %s (gc or repair-index); 'rok repo locks' shows who holds it, and a lock "
                        "whose holder died counts as stale after %gs",
                        blocking[0],
                        self.backend.url,
                        2 * lease_seconds(),
                    )
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
                if not told:
                    told = True
                    log.warning(
                        "gc waits for %d locks on %s (snapshots, restores, checks); 'rok repo locks' shows them",
                        len(others),
                        self.backend.url,
                    )
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


async def list_locks(backend: Backend) -> list[LockInfo]:
    """Every lock in the repository, with its holder and whether (and why) it is stale.

    A lock is stale when its holder has not refreshed it for ``2 × lease`` (what every other party goes by), or
    when it was taken on this host by a process that no longer runs (what ``rok repo unlock`` also removes;
    others still wait out the lease, since a process id means nothing on another host or in another container).
    """
    now = time.time()
    here = socket.gethostname()
    out: list[LockInfo] = []
    for info in sorted(await backend.list("locks/"), key=lambda i: i.key):
        try:
            body = json.loads(await backend.get(info.key))
            host, pid = str(body.get("host", "")), int(body.get("pid", 0))
        except ObjectNotFound:  # released meanwhile
            continue
        except (ValueError, TypeError, AttributeError):
            host, pid = "", 0
        age = max(0.0, now - info.mtime)
        stale = ""
        if age >= 2 * lease_seconds():
            stale = f"not refreshed for {age:.0f}s (the lease is {lease_seconds():g}s)"
        elif host == here and pid > 0 and not _running(pid):
            stale = f"process {pid} on {host} is gone"
        kind = info.key.removeprefix("locks/").split("-", 1)[0]
        out.append(LockInfo(info.key, kind, host, pid, round(age, 1), stale))
    return out


async def remove_locks(backend: Backend, *, remove_all: bool = False) -> list[LockInfo]:
    """Remove the stale locks (every lock with ``remove_all``); the locks removed."""
    removed = [lock for lock in await list_locks(backend) if remove_all or lock.stale]
    for lock in removed:
        await backend.delete(lock.key)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


async def remove_stale_locks(backend: Backend) -> int:
    now = time.time()
    stale = [i for i in await backend.list("locks/") if now - i.mtime >= 2 * lease_seconds()]
    for info in stale:
        await backend.delete(info.key)
    return len(stale)
