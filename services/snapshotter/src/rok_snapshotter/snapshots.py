"""Taking the snapshots an event asks for, once each, and saying how each went.

For every volume of the event: if its snapshot is already recorded (a redelivery), the recorded
``SnapshotCompleted`` is published again; otherwise the volume is located, snapshotted into the repository,
recorded, then announced, with a summary of what changed since the volume's previous snapshot
(:mod:`rok_snapshotter.changes`). Recording before announcing means a crash in between cannot lead to a second,
different snapshot of the same fact. Volumes run in parallel, at most ``concurrency`` at once on this node,
whatever event they belong to.

Which directory a volume is, and whether this snapshotter may read it at all, is the :class:`Volumes`' to say
(:class:`rok_snapshotter.volumes.LocalVolumes` off a cluster, :class:`rok_snapshotter.kube.ClusterVolumes` in
one). A volume it refuses is not announced at all (the event is not to be trusted, and a ``SnapshotFailed``
would write into the lineage of whatever run it claims); the event is dead-lettered with the reason.

Failures are per volume: one that cannot be fixed by retrying (the volume is not there) is announced as
``SnapshotFailed`` at once; one that may be transient (the store is unreachable) is retried by delivering the
event again, and announced as failed only on the last delivery. Volumes that succeeded are not taken again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

from rokcommon.errors import PermanentError, TemporaryError
from rokcommon.events import Event, RunRef, SnapshotCompleted, StepRef, VolumeRef, now
from rokcommon.keepalive import Heartbeat
from rokcommon.telemetry import Instruments
from rokstore import Progress, Repository, SnapshotDiff, SnapshotStats

from rok_snapshotter.changes import Latest, changes_since
from rok_snapshotter.plan import NodeEvent, SnapshotPlan, plan_for, stats_model
from rok_snapshotter.volumes import VolumeRefused

log = logging.getLogger(__name__)


class Records(Latest, Protocol):
    async def get(self, key: str) -> SnapshotCompleted | None: ...
    async def put(self, key: str, event: SnapshotCompleted) -> None: ...


class Volumes(Protocol):
    """Where a volume of a run's (or step's) event is on this node, if this snapshotter may read it."""

    async def locate(self, volume: VolumeRef, run: RunRef, step: StepRef | None) -> Path: ...


class Repositories(Protocol):
    url: str

    async def get(self) -> Repository: ...
    async def snapshot(
        self, path: Path, *, tags: dict[str, str], cache_key: str, progress: Callable[[Progress], None]
    ) -> SnapshotStats: ...
    async def diff(self, a: str, b: str) -> SnapshotDiff: ...


class SnapshotTaker:
    def __init__(
        self,
        *,
        repository: Repositories,
        records: Records,
        publish: Callable[[Event], Awaitable[object]],
        volumes: Volumes,
        concurrency: int,
        instruments: Instruments,
        retry_delay: float = 2.0,
    ) -> None:
        self.repository = repository
        self.records = records
        self.publish = publish
        self.volumes = volumes
        self.instruments = instruments
        self.retry_delay = retry_delay
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: dict[str, _Flight] = {}

    async def handle(self, event: NodeEvent, heartbeat: Heartbeat, *, last_delivery: bool) -> None:
        """Snapshot every volume of ``event``; raise when some volume must be tried again or cannot be taken."""
        plan = plan_for(event)
        results = await asyncio.gather(
            *(self._volume(plan, volume, heartbeat, last_delivery) for volume in plan.volumes),
            return_exceptions=True,
        )
        failures = [(v, r) for v, r in zip(plan.volumes, results, strict=True) if isinstance(r, BaseException)]
        for _, error in failures:
            if not isinstance(error, Exception):
                raise error  # cancelled: left unacked, delivered again
        if not failures:
            return
        summary = "; ".join(f"{v.name}: {e}" for v, e in failures)
        if any(not isinstance(e, PermanentError) for _, e in failures):
            raise TemporaryError(
                f"{len(failures)} of {len(plan.volumes)} volume(s) not snapshotted: {summary}", delay=self.retry_delay
            )
        raise PermanentError(f"{len(failures)} of {len(plan.volumes)} volume(s) cannot be snapshotted: {summary}")

    async def _volume(self, plan: SnapshotPlan, volume: VolumeRef, heartbeat: Heartbeat, last_delivery: bool) -> None:
        try:
            await self._snapshot_once(plan, volume, heartbeat)
        except asyncio.CancelledError:
            raise
        except VolumeRefused as error:
            log.error("refusing volume %s of event %s: %s", volume.name, plan.event_id, error)
            raise
        except PermanentError as error:
            await self._failed(plan, volume, str(error))
            raise
        except Exception as error:
            if last_delivery:
                await self._failed(plan, volume, f"gave up after the last delivery: {_reason(error)}")
            else:
                log.warning("snapshot of volume %s failed, will retry: %s", volume.name, _reason(error))
            raise

    async def _snapshot_once(self, plan: SnapshotPlan, volume: VolumeRef, heartbeat: Heartbeat) -> None:
        key = plan.completed_id(volume)
        async with self._only_one(key, heartbeat):
            recorded = await self.records.get(key)
            if recorded is not None:
                log.info("volume %s already snapshotted as %s; announcing it again", volume.name, recorded.snapshot_id)
                await self.publish(recorded)
                return
            path = await self.volumes.locate(volume, plan.run, plan.step)
            async with self._slot(heartbeat):
                completed = await self._take(plan, volume, path, heartbeat)
            await self.records.put(key, completed)
            await self.records.remember(self.repository.url, volume.cache_key, completed.snapshot_id)
            await self.publish(completed)

    async def _take(self, plan: SnapshotPlan, volume: VolumeRef, path: Path, heartbeat: Heartbeat) -> SnapshotCompleted:
        heartbeat.pulse()
        parent = await self.records.latest(self.repository.url, volume.cache_key)
        taken_at = now()  # the state captured is the volume's from here on
        stats = await self.repository.snapshot(
            path, tags=plan.store_tags(volume), cache_key=volume.cache_key, progress=heartbeat.progress
        )
        attrs = {"phase": plan.phase}
        self.instruments.add("rok.snapshot.bytes.scanned", stats.bytes_scanned, attrs)
        self.instruments.add("rok.snapshot.bytes.read", stats.bytes_read, attrs)
        self.instruments.add("rok.snapshot.bytes.new", stats.bytes_new, attrs)
        self.instruments.add("rok.snapshot.bytes.uploaded", stats.bytes_uploaded, attrs)
        self.instruments.add("rok.snapshot.duration", stats.seconds, attrs)
        if stats.bytes_scanned:
            self.instruments.add("rok.snapshot.dedup.ratio", 1 - stats.bytes_new / stats.bytes_scanned, attrs)
        self.instruments.add("rok.snapshot.completed", 1, attrs)
        log.info(
            "snapshotted volume %s (%s) as %s: %d files, %d bytes, %d new, %.2fs%s",
            volume.name,
            path,
            stats.snapshot_id,
            stats.files,
            stats.bytes_scanned,
            stats.bytes_new,
            stats.seconds,
            f", {len(stats.errors)} unreadable" if stats.incomplete else "",
            extra={"snapshot_id": stats.snapshot_id, "phase": plan.phase},
        )
        return plan.completed(
            volume,
            repository=self.repository.url,
            snapshot_id=stats.snapshot_id,
            stats=stats_model(stats),
            taken_at=taken_at,
            changes=await changes_since(self.repository, parent, stats.snapshot_id),
        )

    async def _failed(self, plan: SnapshotPlan, volume: VolumeRef, reason: str) -> None:
        self.instruments.add("rok.snapshot.failures", 1, {"phase": plan.phase})
        log.error("snapshot of volume %s failed: %s", volume.name, reason)
        await self.publish(plan.failed(volume, reason[:2000]))

    @contextlib.asynccontextmanager
    async def _slot(self, heartbeat: Heartbeat) -> AsyncIterator[None]:
        async with heartbeat.keep_alive():
            await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    @contextlib.asynccontextmanager
    async def _only_one(self, key: str, heartbeat: Heartbeat) -> AsyncIterator[None]:
        """One snapshot of a volume for one fact at a time in this process (a redelivery waits for the first)."""
        entry = self._in_flight.setdefault(key, _Flight())
        entry.users += 1
        try:
            async with heartbeat.keep_alive():
                await entry.lock.acquire()
            try:
                yield
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._in_flight[key]


class _Flight:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def _reason(error: BaseException) -> str:
    return str(error) if isinstance(error, TemporaryError) else f"{type(error).__name__}: {error}"
