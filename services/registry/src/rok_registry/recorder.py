"""Recording run, step and snapshot events into SQL: one transaction per event, upserts on natural keys.

Each ``record_*`` call locks its run's row (``SELECT … FOR UPDATE`` on PostgreSQL; one writer on SQLite),
applies what the event says, then *settles* what the event can change: it recomputes, from what is recorded,
the status and tags of the versions concerned (a snapshot's version, a step's versions; every version of the run
for the run's own events and once the run has succeeded, since ``final`` may move). It returns what to announce:
versions that became whole (``fresh``: noted in the same transaction, counted once), and again the whole version
a redelivered snapshot event is about (every whole version for ``RunStarted``), since the announcement of the
first delivery may have been lost between the commit and the publish. The caller publishes their
``VersionCommitted``; the stream drops a repeated announcement by its id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rokcommon.errors import PermanentError
from rokcommon.events import (
    Event,
    RunFinished,
    RunRef,
    RunStarted,
    SnapshotCompleted,
    SnapshotFailed,
    StepFinished,
    StepRef,
    StepStarted,
    VersionCommitted,
)
from rokcommon.urls import format_url
from sqlalchemy import Insert, Select, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from rok_registry import lineage, names
from rok_registry.database import Database
from rok_registry.tables import BucketRow, FileRow, MemberRow, NamespaceRow, StepRow, VersionRow

log = logging.getLogger(__name__)

# The recorder has the run's row in hand: loading it again with every version would only cost joins.
_NO_RUN = raiseload(VersionRow.file)

# Statements built once (the hot path builds none but its inserts, and those only for new rows).
_FIND_RUN = select(FileRow).where(FileRow.workflow_uid == bindparam("workflow_uid"))
_FIND_STEP = select(StepRow).where(
    StepRow.file_id == bindparam("file_id"),
    StepRow.step_id == bindparam("step_id"),
    StepRow.attempt == bindparam("attempt"),
)
_FIND_VERSION = select(VersionRow).where(VersionRow.id == bindparam("id")).options(_NO_RUN)
_MEMBERS_OF = select(MemberRow.volume, MemberRow.status, MemberRow.taken_at).where(
    MemberRow.version_id == bindparam("version_id")
)


@dataclass(frozen=True)
class Commit:
    """A version that became whole: the event announcing it, and when its step event happened."""

    event: VersionCommitted
    since: datetime
    fresh: bool  # first recorded whole by this event (a repeat announcement is not)


def _now() -> datetime:
    return datetime.now(UTC)


class Recorder:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        self._namespaces: dict[str, int] = {}
        postgres = db.dialect == "postgresql"
        self._find_run = _FIND_RUN.with_for_update(of=FileRow) if postgres else _FIND_RUN

    # --- events -------------------------------------------------------------------------------------------

    async def record(self, event: Event) -> list[Commit]:
        """Record any event the registry consumes (others are ignored)."""
        match event:
            case RunStarted():
                return await self.record_run_started(event)
            case RunFinished():
                return await self.record_run_finished(event)
            case StepStarted():
                return await self.record_step_started(event)
            case StepFinished():
                return await self.record_step_finished(event)
            case SnapshotCompleted() | SnapshotFailed():
                return await self.record_snapshot(event)
        log.debug("not recording %s", type(event).__name__)
        return []

    async def record_run_started(self, event: RunStarted) -> list[Commit]:
        async with self.db.writing() as session:
            run = await self._run(session, event.run)
            if run.bucket_id is None:
                bucket = await self._bucket(session, run.namespace_id, event.experiment)
                run.bucket_id = bucket.id
                run.name = names.file_name(event.run_name, event.run.run_id, bucket.suffix, run.workflow_uid)
            run.run_name = event.run_name
            run.pipeline_name = event.pipeline_name
            run.pipeline_version = event.pipeline_version
            run.started_at = event.started_at
            return await self._settle(session, run, announce_whole=True)

    async def record_run_finished(self, event: RunFinished) -> list[Commit]:
        async with self.db.writing() as session:
            run = await self._run(session, event.run)
            run.status = event.outcome
            run.finished_at = event.finished_at
            return await self._settle(session, run)

    async def record_step_started(self, event: StepStarted) -> list[Commit]:
        async with self.db.writing() as session:
            run = await self._run(session, event.step.run)
            step = await self._step(session, run, event.step)
            step.node = event.node
            step.guarded = event.guarded
            step.started_at = event.started_at
            return []  # a step's start changes no version: neither whether it is whole nor its tags

    async def record_step_finished(self, event: StepFinished) -> list[Commit]:
        async with self.db.writing() as session:
            run = await self._run(session, event.step.run)
            step = await self._step(session, run, event.step)
            step.node = step.node or event.node
            step.guarded = step.guarded or event.guarded
            step.finished_at = event.finished_at
            step.outcome = event.outcome
            return await self._settle(session, run, (step.step_id, step.attempt))

    async def record_snapshot(self, event: SnapshotCompleted | SnapshotFailed) -> list[Commit]:
        async with self.db.writing() as session:
            run = await self._run(session, event.run)
            step = await self._step(session, run, event.step) if event.step is not None else None
            version = await self._version(session, run, event)
            completed = isinstance(event, SnapshotCompleted)
            member: dict[str, Any] = {
                "version_id": version.id,
                "volume": event.volume.name,
                "role": event.volume.role,
                "position": version.volume_names.index(event.volume.name),
                "status": "complete" if completed else "failed",
                "node": event.node,
            }
            if isinstance(event, SnapshotCompleted):
                member |= {
                    "snapshot_id": event.snapshot_id,
                    "repository": event.repository,
                    "size": event.stats.bytes_scanned,
                    "bytes_new": event.stats.bytes_new,
                    "files": event.stats.files,
                    "taken_at": event.taken_at,
                    "changes": event.changes.model_dump(mode="json") if event.changes is not None else None,
                }
                version.best_effort = version.best_effort or event.best_effort
                version.event_tags = ",".join(sorted(set(_split(version.event_tags)) | set(event.tags)))
            else:
                member |= {"reason": event.reason, "size": 0, "bytes_new": 0, "files": 0}
            inserted = await session.execute(
                self._insert(MemberRow).values(**member).on_conflict_do_nothing().returning(MemberRow.id)
            )
            if inserted.first() is None and completed:
                # A volume that failed and then succeeded on a retry counts as stored; a stored one stays.
                await session.execute(
                    update(MemberRow)
                    .where(MemberRow.version_id == version.id, MemberRow.volume == event.volume.name)
                    .where(MemberRow.status == "failed")
                    .values(**member, reason=None)
                )
            if run.status == "succeeded":  # the final tag may move to this version
                return await self._settle(session, run, again=version.id)
            return await self._settle_version(session, run, version, step)

    # --- rows ---------------------------------------------------------------------------------------------

    async def _run(self, session: AsyncSession, ref: RunRef) -> FileRow:
        """The run's row, created if new, locked for this transaction."""
        namespace_id = await self._namespace(session, ref.namespace)
        run: FileRow = await _get_or_insert(
            session,
            self._find_run,
            {"workflow_uid": ref.workflow_uid},
            lambda: (
                self._insert(FileRow)
                .values(
                    workflow_uid=ref.workflow_uid,
                    namespace_id=namespace_id,
                    run_id=ref.run_id,
                    status="running",
                    created_at=_now(),
                )
                .on_conflict_do_nothing(index_elements=["workflow_uid"])
            ),
        )
        if run.namespace_id != namespace_id:
            raise PermanentError(
                f"run {ref.workflow_uid} is recorded in namespace {run.namespace.name!r}, "
                f"but this event says {ref.namespace!r}"
            )
        return run

    async def _namespace(self, session: AsyncSession, name: str) -> int:
        if name not in self._namespaces:  # namespaces are never removed: their ids can be remembered
            self._namespaces[name] = await _get_or_insert(
                session,
                select(NamespaceRow.id).where(NamespaceRow.name == name),
                {},
                lambda: (
                    self._insert(NamespaceRow)
                    .values(name=name, created_at=_now())
                    .on_conflict_do_nothing(index_elements=["name"])
                ),
            )
        return self._namespaces[name]

    async def _bucket(self, session: AsyncSession, namespace_id: int, experiment: str | None) -> BucketRow:
        key = experiment or ""
        query = select(BucketRow).where(BucketRow.namespace_id == namespace_id, BucketRow.experiment_key == key)
        for _ in range(8):  # a new random suffix if the name is taken
            suffix = names.random_suffix()
            await session.execute(
                self._insert(BucketRow)
                .values(
                    namespace_id=namespace_id,
                    name=names.bucket_name(experiment, suffix),
                    suffix=suffix,
                    experiment_key=key,
                    experiment=experiment,
                    created_at=_now(),
                )
                .on_conflict_do_nothing()
            )
            bucket = (await session.execute(query)).scalar_one_or_none()
            if bucket is not None:
                return bucket
        raise PermanentError(f"could not name a bucket for experiment {experiment!r}")

    async def _step(self, session: AsyncSession, run: FileRow, ref: StepRef) -> StepRow:
        step: StepRow = await _get_or_insert(
            session,
            _FIND_STEP,
            {"file_id": run.id, "step_id": ref.step_id, "attempt": ref.attempt},
            lambda: (
                self._insert(StepRow)
                .values(file_id=run.id, step_id=ref.step_id, attempt=ref.attempt, name=ref.name, guarded=False)
                .on_conflict_do_nothing(index_elements=["file_id", "step_id", "attempt"])
            ),
        )
        step.name = step.name or ref.name
        return step

    async def _version(
        self, session: AsyncSession, run: FileRow, event: SnapshotCompleted | SnapshotFailed
    ) -> VersionRow:
        step = event.step
        version_id = event.key.version_id
        version: VersionRow = await _get_or_insert(
            session,
            _FIND_VERSION,
            {"id": version_id},
            lambda: (
                self._insert(VersionRow)
                .values(
                    id=version_id,
                    file_id=run.id,
                    step_key=step.step_id if step else "",
                    attempt=step.attempt if step else 0,
                    phase=event.phase,
                    step_name=step.name if step else None,
                    volumes="\n".join(event.volumes),
                    event_tags="",
                    tags="",
                    status="pending",
                    best_effort=False,
                    created_at=_now(),
                )
                .on_conflict_do_nothing(index_elements=["id"])
            ),
        )
        merged = lineage.merge_volumes(version.volume_names, [*event.volumes, event.volume.name])
        if merged != version.volume_names:
            version.volumes = "\n".join(merged)
        return version

    # --- settling a run -----------------------------------------------------------------------------------

    async def _settle(
        self,
        session: AsyncSession,
        run: FileRow,
        step: tuple[str, int] | None = None,
        *,
        announce_whole: bool = False,
        again: str | None = None,
    ) -> list[Commit]:
        """Recompute the status and tags of a run's versions; return the ones to announce.

        An event about one step (``step``: its node id and attempt, "" for the initial version) can only change
        that step's versions, unless the run has succeeded: then the ``final`` tag may move, and every version
        of the run is looked at, as after the run's own events.
        """
        await session.flush()
        scope = step if run.status != "succeeded" else None
        versions_query = select(VersionRow).where(VersionRow.file_id == run.id).options(_NO_RUN)
        steps_query = select(StepRow).where(StepRow.file_id == run.id)
        if scope is not None:
            versions_query = versions_query.where(VersionRow.step_key == scope[0], VersionRow.attempt == scope[1])
            steps_query = steps_query.where(StepRow.step_id == scope[0], StepRow.attempt == scope[1])
        query = versions_query.execution_options(populate_existing=True)
        versions = list((await session.execute(query)).scalars().all())
        steps = {(s.step_id, s.attempt): s for s in (await session.execute(steps_query)).scalars()}
        facts = []
        for version in versions:
            version.status = lineage.version_status(version.volume_names, {m.volume: m.status for m in version.members})
            times = [m.taken_at for m in version.members if m.taken_at is not None]
            version.taken_at = max(times) if times else None
            step_row = steps.get((version.step_key, version.attempt))
            facts.append(
                lineage.VersionFacts(
                    id=version.id,
                    phase=version.phase,
                    taken_at=version.taken_at,
                    event_tags=frozenset(_split(version.event_tags)),
                    step_outcome=step_row.outcome if step_row else None,
                )
            )
        final = lineage.final_version(run.status, facts)
        for version, fact in zip(versions, facts, strict=True):
            version.tags = ",".join(lineage.tags_for(fact, final=final))
        if run.bucket_id is None or run.name is None:
            return []  # not announced before the run's RunStarted names it
        bucket = await session.get(BucketRow, run.bucket_id)
        assert bucket is not None
        return [
            self._commit(run, bucket, v, steps.get((v.step_key, v.attempt)))
            for v in versions
            if v.status != "pending" and (v.committed_at is None or announce_whole or v.id == again)
        ]

    async def _settle_version(
        self, session: AsyncSession, run: FileRow, version: VersionRow, step: StepRow | None
    ) -> list[Commit]:
        """:meth:`_settle` for the one version a snapshot event is about, while the run has not succeeded."""
        members = (await session.execute(_MEMBERS_OF, {"version_id": version.id})).all()
        version.status = lineage.version_status(version.volume_names, {m.volume: m.status for m in members})
        times = [m.taken_at for m in members if m.taken_at is not None]
        version.taken_at = max(times) if times else None
        fact = lineage.VersionFacts(
            id=version.id,
            phase=version.phase,
            taken_at=version.taken_at,
            event_tags=frozenset(_split(version.event_tags)),
            step_outcome=step.outcome if step else None,
        )
        version.tags = ",".join(lineage.tags_for(fact, final=None))
        if run.bucket_id is None or run.name is None or version.status == "pending":
            return []
        bucket = await session.get(BucketRow, run.bucket_id)
        assert bucket is not None
        return [self._commit(run, bucket, version, step)]

    def _commit(self, run: FileRow, bucket: BucketRow, version: VersionRow, step: StepRow | None) -> Commit:
        """The announcement of a whole version; the first one notes when the version was committed."""
        fresh = version.committed_at is None
        if fresh:
            version.committed_at = _now()
        ref = RunRef(namespace=run.namespace.name, run_id=run.run_id, workflow_uid=run.workflow_uid)
        step_ref = None
        if version.step_key:
            name = version.step_name or (step.name if step else None) or version.step_key
            step_ref = StepRef(run=ref, step_id=version.step_key, name=name, attempt=version.attempt)
        assert run.name is not None
        event = VersionCommitted.make(
            run=ref,
            step=step_ref,
            phase=version.phase,
            url=format_url(run.namespace.name, bucket.name, run.name, version.id),
            tags=tuple(_split(version.tags)),
            complete=version.status == "complete",
        )
        since = {
            "initial": run.started_at,
            "before": step.started_at if step else None,
            "after": step.finished_at if step else None,
        }.get(version.phase)
        return Commit(event=event, since=since or version.created_at, fresh=fresh)


async def _get_or_insert(
    session: AsyncSession, query: Select[Any], params: dict[str, Any], insert: Callable[[], Insert]
) -> Any:
    """The row ``query`` finds, inserting it first (``ON CONFLICT DO NOTHING``) if it is not there yet."""
    found = (await session.execute(query, params)).scalar_one_or_none()
    if found is None:
        await session.execute(insert())
        found = (await session.execute(query, params)).scalar_one()
    return found


def _split(tags: str) -> list[str]:
    return [t for t in tags.split(",") if t]
