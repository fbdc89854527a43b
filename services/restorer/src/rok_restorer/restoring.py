"""Restoring one request: resolve its URL, choose the volumes, restore them in parallel, decide the outcome.

Plain domain code: the registry, the outcome store and the progress sink come in as small protocols, the
destination as a :class:`~rok_restorer.targets.Target`. The store engine does the restoring itself and verifies
every chunk against its BLAKE3 id; a restore only reads the repository (it never changes a stored snapshot).

What a request ends in:

- :class:`RestoreCompleted` with per-volume statistics;
- :class:`RestoreFailed` with a reason a user can act on, for every failure retrying cannot fix (unknown URL,
  another namespace's version, unknown volume, target not empty, corrupted data, …) — final, never retried;
- a :class:`~rokcommon.errors.TemporaryError` (or an unexpected error) raised to the caller, so that the message
  is delivered again later — unless this was the last attempt, which ends in a RestoreFailed instead.

Redeliveries are idempotent. The outcome of each request is kept (:class:`Outcomes`), and a request that already
ended publishes the same outcome again (its event id derives from the request id). Before writing, a request
*claims* its target and records the claim; a redelivery that finds its own claim (the earlier attempt crashed or
failed transiently) discards what that attempt wrote and starts over, instead of refusing a "non-empty" target.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeAlias

from opentelemetry import trace
from rokcommon.errors import Forbidden, InvalidRequest, NotFound, PermanentError
from rokcommon.events import (
    DirectoryTarget,
    RestoreCompleted,
    RestoredVolume,
    RestoreFailed,
    RestoreProgress,
    RestoreRequested,
)
from rokcommon.notebooks import NotebookVolume
from rokcommon.registry_contract import Resolved, Version
from rokcommon.telemetry import event_attributes
from rokstore import CorruptData, Progress, Repository, RestoreStats, open_repository, restore

from rok_restorer.targets import Target, Targets, VolumeToRestore

log = logging.getLogger(__name__)
tracer = trace.get_tracer("rok_restorer")

Outcome: TypeAlias = RestoreCompleted | RestoreFailed


class Catalog(Protocol):
    """Resolves ``rok://`` URLs (the registry)."""

    async def resolve(self, namespace: str, url: str) -> Resolved: ...


@dataclass(frozen=True)
class Record:
    """What is kept about a request: its target claimed (work under way), or its outcome."""

    state: Literal["claimed", "done"]
    outcome: Outcome | None = None


class Outcomes(Protocol):
    """Durable memory of requests, keyed by the request's event id."""

    async def get(self, key: str) -> Record | None: ...

    async def put(self, key: str, record: Record) -> None: ...


class Meter(Protocol):
    def add(self, name: str, value: float, attributes: dict[str, str] | None = None) -> None: ...


ProgressSink = Callable[[RestoreProgress], None]


class Refused(PermanentError):
    """A request that cannot succeed as asked; the message is the reason the user reads."""


class Restorer:
    def __init__(
        self,
        catalog: Catalog,
        outcomes: Outcomes,
        targets: Targets,
        *,
        parallel_volumes: int = 4,
        cache_dir: Path | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.catalog = catalog
        self.outcomes = outcomes
        self.targets = targets
        self.parallel_volumes = parallel_volumes
        self.cache_dir = cache_dir
        self.meter = meter

    async def handle(
        self, request: RestoreRequested, *, progress: ProgressSink | None = None, last_attempt: bool = False
    ) -> Outcome:
        """Restore what ``request`` asks for and return its outcome (the same one on every redelivery)."""
        key = request.event_id
        prior = await self.outcomes.get(key)
        if prior is not None and prior.outcome is not None:
            log.info("request %s already ended; its outcome is published again", request.request_id)
            return prior.outcome
        started = time.monotonic()
        owned: Target | None = None  # a target this request claimed: what is in it is ours to discard
        with tracer.start_as_current_span(
            "rok.restore", attributes={**event_attributes(request), "rok.url": request.url}
        ) as span:
            try:
                if (request.devices or request.keep_setuid) and not isinstance(request.target, DirectoryTarget):
                    raise Refused(
                        "device files and set-uid/set-gid bits are restored only into a directory, never into a "
                        "volume of the cluster; ask again without --devices and --keep-setuid"
                    )
                resolved = await self._resolve(request)
                volumes = choose_volumes(resolved, request.volumes)
                target = self.targets.open(request.target, volumes, resolved.version.notebook)
                if prior is not None:  # our own earlier attempt was cut short: what it wrote is ours to remove
                    log.info("request %s was interrupted before; discarding its partial restore", request.request_id)
                    await target.discard()
                await target.claim()
                await self.outcomes.put(key, Record("claimed"))
                owned = target
                restored = await self._restore_all(request, target, volumes, progress)
            except PermanentError as error:
                if owned is not None:
                    await owned.discard()
                outcome: Outcome = self._failed(request, error)
            except Exception as error:
                if owned is not None:
                    await owned.discard()
                if not last_attempt:
                    raise
                reason = f"the restore could not finish after several attempts ({error}); request it again"
                outcome = self._failed(request, Refused(reason))
            else:
                outcome = RestoreCompleted.make(
                    request_id=request.request_id,
                    namespace=request.namespace,
                    url=request.url,
                    volumes=tuple(restored),
                    seconds=round(time.monotonic() - started, 3),
                )
            span.set_attribute(
                "rok.restore.outcome", "completed" if isinstance(outcome, RestoreCompleted) else "failed"
            )
        await self.outcomes.put(key, Record("done", outcome))
        self._measure(outcome, time.monotonic() - started)
        return outcome

    # --- choosing the volumes ----------------------------------------------------------------------------

    async def _resolve(self, request: RestoreRequested) -> Resolved:
        with tracer.start_as_current_span("rok.restore.resolve"):
            try:
                return await self.catalog.resolve(request.namespace, request.url)
            except NotFound as error:
                raise Refused(f"unknown URL {request.url}: {error}") from error
            except Forbidden as error:
                raise Refused(f"{request.url} is not in namespace {request.namespace!r}: {error}") from error
            except InvalidRequest as error:
                raise Refused(f"invalid URL {request.url}: {error}") from error

    # --- restoring ---------------------------------------------------------------------------------------

    async def _restore_all(
        self,
        request: RestoreRequested,
        target: Target,
        volumes: Sequence[VolumeToRestore],
        progress: ProgressSink | None,
    ) -> list[RestoredVolume]:
        slots = asyncio.Semaphore(self.parallel_volumes)
        repositories: dict[str, asyncio.Task[Repository]] = {}

        def repository(url: str) -> asyncio.Task[Repository]:
            if url not in repositories:
                repositories[url] = asyncio.ensure_future(open_repository(url, cache_dir=self.cache_dir))
            return repositories[url]

        async def one(volume: VolumeToRestore) -> RestoredVolume:
            async with slots:
                with tracer.start_as_current_span(
                    "rok.restore.volume",
                    attributes={"rok.volume": volume.name, "rok.snapshot.id": volume.snapshot_id},
                ) as span:
                    repo = await repository(volume.repository)

                    def report(p: Progress) -> None:
                        if progress is not None:
                            progress(
                                RestoreProgress(
                                    request_id=request.request_id,
                                    volume=volume.name,
                                    bytes_done=p.bytes_done,
                                    bytes_total=p.bytes_total,
                                    files_done=p.files_done,
                                )
                            )

                    async def into_directory(path: Path) -> RestoreStats:
                        return await restore(
                            repo,
                            volume.snapshot_id,
                            path,
                            progress=report,
                            devices=request.devices,
                            keep_setuid=request.keep_setuid,
                        )

                    try:
                        restored = await target.restore_volume(volume, into_directory)
                    except CorruptData as error:
                        raise Refused(f"the stored data of volume {volume.name!r} is corrupted: {error}") from error
                    except PermanentError as error:
                        raise Refused(f"volume {volume.name!r}: {error}") from error
                    span.set_attribute("rok.bytes", restored.bytes)
                    return restored

        tasks = [asyncio.ensure_future(one(v)) for v in volumes]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for opening in repositories.values():
                if opening.done() and not opening.cancelled() and opening.exception() is None:
                    await opening.result().close()
                else:
                    opening.cancel()

    # --- outcomes ----------------------------------------------------------------------------------------

    def _failed(self, request: RestoreRequested, error: Exception) -> RestoreFailed:
        log.warning("restore %s of %s failed: %s", request.request_id, request.url, error)
        return RestoreFailed.make(
            request_id=request.request_id, namespace=request.namespace, url=request.url, reason=str(error)
        )

    def _measure(self, outcome: Outcome, seconds: float) -> None:
        if self.meter is None:
            return
        if isinstance(outcome, RestoreCompleted):
            self.meter.add("rok.restore.duration", seconds, {"outcome": "completed"})
            self.meter.add("rok.restore.bytes", sum(v.bytes for v in outcome.volumes))
        else:
            self.meter.add("rok.restore.duration", seconds, {"outcome": "failed"})
            self.meter.add("rok.restore.failures", 1)


def choose_volumes(resolved: Resolved, requested: Sequence[str]) -> list[VolumeToRestore]:
    """The members to restore, in the version's order (workspace first): all those the URL names, or those asked."""
    version = resolved.version
    members = {m.volume: m for m in resolved.members}
    failed = {f.volume: f.reason for f in version.failed}
    wanted = list(dict.fromkeys(requested)) or [m.volume for m in resolved.members]
    for name in wanted:
        if name in members:
            continue
        if name in failed:
            raise Refused(
                f"volume {name!r} of {resolved.url} was not snapshotted ({failed[name]}); it cannot be restored"
            )
        if name in version.volumes and version.status == "pending":
            raise Refused(
                f"volume {name!r} of {resolved.url} is not recorded yet (the version is still being taken); "
                "request the restore again once it is committed"
            )
        holds = ", ".join(members) or "no stored volume"
        raise Refused(f"{resolved.url} has no volume {name!r}; it holds: {holds}")
    if not wanted:
        raise Refused(f"{resolved.url} holds no stored volume to restore")
    originals = _originals(version)
    return [
        VolumeToRestore(
            name=m.volume,
            snapshot_id=m.snapshot_id,
            repository=m.repository,
            size=m.size,
            original=originals.get(m.volume),
        )
        for m in resolved.members
        if m.volume in wanted
    ]


def _originals(version: Version) -> dict[str, NotebookVolume]:
    """Each of the version's volumes → the notebook server's claim it was (or was cloned from).

    The initial version holds the notebook's own claims, under their names. A step's versions hold the run's
    clones: those whose name is not the notebook's are matched in order (the clones are made one per notebook
    volume, in the notebook's order, the workspace first)."""
    notebook = version.notebook
    if notebook is None:
        return {}
    by_name = {v.volume: v for v in notebook.volumes}
    if all(name in by_name for name in version.volumes):
        return {name: by_name[name] for name in version.volumes}
    if len(version.volumes) == len(notebook.volumes):
        return dict(zip(version.volumes, notebook.volumes, strict=True))
    return {name: by_name[name] for name in version.volumes if name in by_name}
