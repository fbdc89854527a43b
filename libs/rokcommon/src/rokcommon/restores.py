"""Ask for a restore on the bus and follow it: what ``rok restore`` and the web page's restore action share.

A restore is a :class:`~rokcommon.events.RestoreRequested` published to JetStream; the restorer reports
progress on core NATS (``rok.restore.progress.v1.<request_id>``, never stored) and ends with a
``RestoreCompleted`` or ``RestoreFailed``, which a :func:`~rokcommon.follow.restores` follower waits for. Both
are subscribed to *before* the request is published, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from rokcommon import bus, subjects
from rokcommon.events import (
    DirectoryTarget,
    RestoreCompleted,
    RestoreFailed,
    RestoreProgress,
    RestoreRequested,
    RestoreTarget,
)
from rokcommon.follow import Follower, restores


@dataclass
class RestoreWatch:
    """The state of one restore request as seen from the bus."""

    request_id: str
    url: str
    target: str
    state: str = "requested"  # requested → running → completed | failed
    volumes: dict[str, tuple[int, int]] = field(default_factory=dict)  # name → (bytes done, bytes total)
    reason: str | None = None
    completed: RestoreCompleted | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _subscriptions: list[Subscription] = field(default_factory=list)
    _outcome: Follower[RestoreCompleted | RestoreFailed] | None = None
    _waiting: asyncio.Task[None] | None = None

    @property
    def bytes_done(self) -> int:
        return sum(d for d, _ in self.volumes.values())

    @property
    def bytes_total(self) -> int:
        return sum(t for _, t in self.volumes.values())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request_id": self.request_id,
            "url": self.url,
            "target": self.target,
            "state": self.state,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "reason": self.reason,
        }
        if self.completed is not None:
            out["volumes"] = [v.model_dump(mode="json") for v in self.completed.volumes]
            out["seconds"] = self.completed.seconds
            out["bytes_done"] = max(out["bytes_done"], sum(v.bytes for v in self.completed.volumes))
            out["bytes_total"] = max(out["bytes_total"], out["bytes_done"])
        return out

    def settle(self, outcome: RestoreCompleted | RestoreFailed) -> None:
        """Take the restore's outcome (once)."""
        if self.done.is_set():
            return
        if isinstance(outcome, RestoreCompleted):
            self.state, self.completed = "completed", outcome
            for volume in outcome.volumes:
                self.volumes[volume.name] = (volume.bytes, volume.bytes)
        else:
            self.state, self.reason = "failed", outcome.reason
        self.done.set()

    async def close(self) -> None:
        if self._waiting is not None:
            self._waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._waiting
        if self._outcome is not None:
            with contextlib.suppress(Exception):
                await self._outcome.stop()
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subscriptions.clear()


async def request_restore(
    nc: Client,
    *,
    namespace: str,
    url: str,
    target_dir: str = "",
    target: RestoreTarget | None = None,
    volumes: tuple[str, ...] = (),
    requested_by: str | None = None,
    on_update: Callable[[RestoreWatch], None] | None = None,
    devices: bool = False,
    keep_setuid: bool = False,
) -> RestoreWatch:
    """Publish a restore request and return a watch that follows it until ``watch.done`` is set.

    The target is ``target`` (a directory, a PVC or a notebook server), or the directory ``target_dir``.
    ``devices`` and ``keep_setuid`` ask for the snapshot's device files and set-uid/set-gid bits of files,
    which a restore leaves out by default.
    """
    request_id = uuid.uuid4().hex
    model = target if target is not None else DirectoryTarget(path=target_dir)
    watch = RestoreWatch(request_id=request_id, url=url, target=_described(model))

    def changed() -> None:
        if on_update is not None:
            on_update(watch)

    async def on_progress(msg: Msg) -> None:
        try:
            progress = RestoreProgress.model_validate_json(msg.data)
        except ValueError:
            return
        if watch.state == "requested":
            watch.state = "running"
        watch.volumes[progress.volume] = (progress.bytes_done, progress.bytes_total)
        changed()

    watch._subscriptions = [await nc.subscribe(subjects.restore_progress(request_id), cb=on_progress)]
    watch._outcome = outcomes = restores(nc.jetstream())
    await outcomes.start()
    await nc.flush()

    async def wait_for_outcome() -> None:
        outcome = await outcomes.wait(request_id, None)
        if outcome is not None and not watch.done.is_set():
            watch.settle(outcome)
            changed()
        await outcomes.stop()

    event = RestoreRequested.make(
        request_id=request_id,
        namespace=namespace,
        url=url,
        volumes=volumes,
        target=model,
        requested_by=requested_by,
        devices=devices,
        keep_setuid=keep_setuid,
    )
    try:
        await bus.publish(nc.jetstream(), event)
    except BaseException:
        await watch.close()
        raise
    watch._waiting = asyncio.create_task(wait_for_outcome())
    return watch


def _described(target: RestoreTarget) -> str:
    """A target as a person names it: a directory's path, ``namespace/name`` of a PVC or notebook server."""
    if isinstance(target, DirectoryTarget):
        return target.path
    return f"{target.namespace}/{target.name}"
