"""Recording run, step and snapshot events into SQL: upserts on natural keys, several events per transaction.

:meth:`Recorder.record_batch` records events in one transaction, and if that fails, each in a transaction of its
own, so that one event that cannot be recorded fails alone. Each ``record_*`` call locks its run's row (see
:mod:`rok_registry.rows`), applies what the event says, then settles what the event can change (see
:mod:`rok_registry.settling`): a snapshot's version, a step's versions, every version of the run for the run's own
events and once the run has succeeded. It returns what to announce: versions that became whole (``fresh``: noted in
the same transaction, counted once), and again the whole version a redelivered snapshot event is about (every whole
version for ``RunStarted``), since the announcement of the first delivery may have been lost between the commit and
the publish. The caller publishes their ``VersionCommitted``; the stream drops a repeated announcement by its id.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from rokcommon.events import (
    Event,
    RunFinished,
    RunStarted,
    SnapshotCompleted,
    SnapshotFailed,
    StepFinished,
    StepStarted,
)
from rokcommon.registry_contract import Bucket
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from rok_registry import names, views
from rok_registry.database import Database
from rok_registry.rows import Rows
from rok_registry.settling import Commit, Due, OneVersion, StepKey, settle, settle_dues
from rok_registry.tables import MemberRow, RunRow

log = logging.getLogger(__name__)

_DUE = "rok.due"  # session.info in a batch: what each run's events can change, by workflow uid, settled at its end
_MEMBERS = "rok.members"  # session.info in a batch: the members its snapshot events recorded, inserted together


class Recorder:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.rows = Rows(db.dialect)

    @asynccontextmanager
    async def transaction(self, *, traced: bool = True) -> AsyncIterator[AsyncSession]:
        """A write transaction; what it looked up is remembered (:meth:`Rows.committed`) only once it commits.

        Changes to rows are written once, at the commit, however many events of a batch made them: no query of
        the recorder filters on a column it changes (only on keys and ids), so none needs them written before.
        ``traced``: the commit has a span of its own.
        """
        async with self.db.writing(traced=traced) as session:
            with session.no_autoflush:
                yield session
        self.rows.committed(session)

    async def experiment_bucket(self, namespace: str, experiment: str) -> Bucket:
        """The experiment's bucket in ``namespace``, named now if it has none yet (``rok submit`` asks before it
        starts a run, to name the run as the bucket). Two replicas asked at once answer the same bucket: the
        row's uniqueness decides, as for the runs' own events."""
        async with self.transaction() as session:
            namespace_id = await self.rows.namespace(session, namespace)
            bucket = await self.rows.bucket(session, namespace_id, experiment)
            files = await session.scalar(select(func.count()).select_from(RunRow).where(RunRow.bucket_id == bucket.id))
            return views.bucket(bucket, files or 0)

    async def record(self, event: Event, *, traced: bool = True) -> list[Commit]:
        """Record any event the registry consumes (others are ignored), in a transaction of its own."""
        async with self.transaction(traced=traced) as session:
            [commits] = await self._record_all(session, [event])
            return commits

    async def record_batch(self, events: Sequence[Event], *, traced: bool = True) -> list[list[Commit] | Exception]:
        """Record events in one transaction; what each announces, or why it failed, in their order.

        If the transaction fails, each event is recorded again on its own: a poison event fails alone, and the
        others are recorded all the same. Runs are locked in one order (by workflow uid) so that two replicas
        recording batches at once do not deadlock; the events of one run are recorded in the order given.
        ``traced``: each transaction has a span of its own.
        """
        if not events:
            return []
        if len(events) == 1:
            return [await self._alone(events[0], traced=traced)]
        try:
            async with self.transaction(traced=traced) as session:
                return list(await self._record_all(session, events))
        except Exception as error:
            log.info("a batch of %d events failed (%s); recording each on its own", len(events), error)
            return [await self._alone(event, traced=traced) for event in events]

    async def _record_all(self, session: AsyncSession, events: Sequence[Event]) -> list[list[Commit]]:
        """Record events in ``session``'s transaction, run by run; the last event of each run announces what the
        run's events made whole."""
        order = sorted(range(len(events)), key=lambda i: _run_of(events[i]))
        await self.rows.prefetch(session, [events[i] for i in order])
        dues: dict[str, Due] = session.info.setdefault(_DUE, {})
        members: list[dict[str, Any]] = session.info.setdefault(_MEMBERS, [])
        results: list[list[Commit]] = [[] for _ in events]
        last: dict[str, int] = {}
        for i in order:
            results[i] = await self.record_in(session, events[i])
            last[_run_of(events[i])] = i
        await self._store_members(session, members)
        for uid, commits in zip(dues, await settle_dues(session, list(dues.values())), strict=True):
            results[last[uid]] = commits
        return results

    async def _store_members(self, session: AsyncSession, members: list[dict[str, Any]]) -> None:
        """Insert the members snapshot events of a batch recorded, in one statement.

        A volume's member is inserted once; a volume that failed and then succeeded (on a retry) counts as
        stored, and a stored one stays: of the events about one volume, the first that stored it wins, else the
        first that failed, as recording them one by one would decide.
        """
        chosen: dict[tuple[str, str], dict[str, Any]] = {}
        for member in members:
            key = (member["version_id"], member["volume"])
            if key not in chosen or (chosen[key]["status"] == "failed" and member["status"] == "complete"):
                chosen[key] = member
        members.clear()
        if not chosen:
            return
        table = MemberRow.__table__
        rows = [{"reason": None, **m} for m in chosen.values()]
        columns = sorted({c for row in rows for c in row})
        rows = [{c: row.get(c) for c in columns} for row in rows]
        inserted = await session.execute(
            self.rows.insert(table).on_conflict_do_nothing().returning(table.c.version_id, table.c.volume), rows
        )
        stored = {(r.version_id, r.volume) for r in inserted}
        for key, member in chosen.items():
            if key in stored or member["status"] != "complete":
                continue
            await session.execute(
                update(table)
                .where(table.c.version_id == key[0], table.c.volume == key[1], table.c.status == "failed")
                .values(**member, reason=None)
            )

    async def _alone(self, event: Event, *, traced: bool) -> list[Commit] | Exception:
        try:
            return await self.record(event, traced=traced)
        except Exception as error:
            return error

    async def record_in(self, session: AsyncSession, event: Event) -> list[Commit]:
        """Record an event in ``session``'s transaction."""
        match event:
            case RunStarted():
                return await self.record_run_started(session, event)
            case RunFinished():
                return await self.record_run_finished(session, event)
            case StepStarted():
                return await self.record_step_started(session, event)
            case StepFinished():
                return await self.record_step_finished(session, event)
            case SnapshotCompleted() | SnapshotFailed():
                return await self.record_snapshot(session, event)
        log.debug("not recording %s", type(event).__name__)
        return []

    async def _settle(
        self,
        session: AsyncSession,
        run: RunRow,
        scope: OneVersion | StepKey | None = None,
        *,
        announce_whole: bool = False,
        again: str | None = None,
    ) -> list[Commit]:
        """Settle what an event changed now, or, in a batch, once at its end with the run's other events."""
        dues: dict[str, Due] | None = session.info.get(_DUE)
        if dues is None:
            return await settle(session, run, scope, announce_whole=announce_whole, again=again)
        dues.setdefault(run.workflow_uid, Due(run)).add(scope, announce_whole=announce_whole, again=again)
        return []

    async def record_run_started(self, session: AsyncSession, event: RunStarted) -> list[Commit]:
        run = await self.rows.run(session, event.run)
        if run.bucket_id is None:
            bucket = await self.rows.bucket(session, run.namespace_id, event.experiment)
            run.bucket_id = bucket.id
            run.name = names.file_name(event.run_name, event.run.run_id, bucket.suffix, run.workflow_uid)
        run.run_name = event.run_name
        run.pipeline_name = event.pipeline_name
        run.pipeline_version = event.pipeline_version
        run.started_at = event.started_at
        if event.notebook is not None:
            run.notebook = event.notebook.model_dump(mode="json")
        return await self._settle(session, run, announce_whole=True)

    async def record_run_finished(self, session: AsyncSession, event: RunFinished) -> list[Commit]:
        run = await self.rows.run(session, event.run)
        run.status = event.outcome
        run.finished_at = event.finished_at
        if event.metrics:
            run.metrics = dict(event.metrics)
        return await self._settle(session, run)

    async def record_step_started(self, session: AsyncSession, event: StepStarted) -> list[Commit]:
        run = await self.rows.run(session, event.step.run)
        step = await self.rows.step(session, run, event.step)
        step.node = event.node
        step.guarded = event.guarded
        step.started_at = event.started_at
        return []  # a step's start changes no version: neither whether it is whole nor its tags

    async def record_step_finished(self, session: AsyncSession, event: StepFinished) -> list[Commit]:
        run = await self.rows.run(session, event.step.run)
        step = await self.rows.step(session, run, event.step)
        step.node = step.node or event.node
        step.guarded = step.guarded or event.guarded
        step.finished_at = event.finished_at
        step.outcome = event.outcome
        return await self._settle(session, run, (step.step_id, step.attempt))

    async def record_snapshot(self, session: AsyncSession, event: SnapshotCompleted | SnapshotFailed) -> list[Commit]:
        run = await self.rows.run(session, event.run)
        step = await self.rows.step(session, run, event.step) if event.step is not None else None
        version = await self.rows.version(session, run, event)
        completed = isinstance(event, SnapshotCompleted)
        member: dict[str, Any] = {
            "version_id": version.id,
            "volume": event.volume.name,
            "role": event.volume.role,
            "position": version.volumes.index(event.volume.name),
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
            version.event_tags = sorted(set(version.event_tags) | set(event.tags))
        else:
            member |= {"reason": event.reason, "size": 0, "bytes_new": 0, "files": 0}
        pending: list[dict[str, Any]] | None = session.info.get(_MEMBERS)
        if pending is not None:
            pending.append(member)  # inserted with the batch's others, before it is settled
        else:
            await self._store_members(session, [member])
        # A redelivered snapshot event announces its whole version again; once the run has succeeded the
        # settling widens to the whole run (the final tag may move to this version).
        return await self._settle(session, run, OneVersion(version, step), again=version.id)


def _run_of(event: Event) -> str:
    """The workflow uid of the run an event is about ("" for events of no run)."""
    match event:
        case RunStarted() | RunFinished() | SnapshotCompleted() | SnapshotFailed():
            return event.run.workflow_uid
        case StepStarted() | StepFinished():
            return event.step.run.workflow_uid
    return ""
