"""The rows an event is recorded into, found on their natural keys or inserted (``INSERT … ON CONFLICT DO NOTHING``).

A redelivered or duplicated event finds the rows its first delivery inserted; two replicas inserting the same row
at once end with one. The run's row is locked for the transaction (``SELECT … FOR UPDATE`` on PostgreSQL), so
that the events of one run are recorded one after the other.

A batch of events finds (or inserts) the rows of all its events at once (:meth:`Rows.prefetch`): a few statements
per batch rather than a few per event; each event then finds its rows in the transaction's own map.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

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
)
from sqlalchemy import Insert, Select, bindparam, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from rok_registry import lineage, names
from rok_registry.tables import BucketRow, NamespaceRow, RunRow, StepRow, VersionRow

# The recorder has the run's row in hand and reads members with a query of their own: loading them again with
# every version would only cost joins and queries.
NO_RUN = (raiseload(VersionRow.run), raiseload(VersionRow.members))
NO_EAGER = (raiseload("*"),)

# Statements built once (the hot path builds none but its inserts, and those only for new rows).
_FIND_RUN = select(RunRow).where(RunRow.workflow_uid == bindparam("workflow_uid"))
_FIND_STEP = select(StepRow).where(
    StepRow.file_id == bindparam("file_id"),
    StepRow.step_id == bindparam("step_id"),
    StepRow.attempt == bindparam("attempt"),
)
_FIND_VERSION = select(VersionRow).where(VersionRow.id == bindparam("id")).options(*NO_RUN)


_ROWS = "rok.rows"  # session.info: the rows this transaction found, by natural key
_PENDING_NAMESPACES = "rok.namespaces"  # session.info: the namespace ids a transaction found, until it commits


T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


class Rows:
    """Get-or-insert of the namespace, bucket, run, step and version rows, in the dialect of one database."""

    def __init__(self, dialect: str) -> None:
        postgres = dialect == "postgresql"
        self.insert = postgresql.insert if postgres else sqlite.insert
        self._find_run = _FIND_RUN.with_for_update(of=RunRow) if postgres else _FIND_RUN
        self._find_runs = select(RunRow).with_for_update(of=RunRow) if postgres else select(RunRow)
        self._namespaces: dict[str, int] = {}

    async def run(self, session: AsyncSession, ref: RunRef) -> RunRow:
        """The run's row, created if new, locked for this transaction."""
        namespace_id = await self.namespace(session, ref.namespace)
        run: RunRow = await in_transaction(
            session,
            ("run", ref.workflow_uid),
            lambda: get_or_insert(
                session,
                self._find_run,
                {"workflow_uid": ref.workflow_uid},
                lambda: (
                    self.insert(RunRow)
                    .values(
                        workflow_uid=ref.workflow_uid,
                        namespace_id=namespace_id,
                        run_id=ref.run_id,
                        status="running",
                        created_at=now(),
                    )
                    .on_conflict_do_nothing(index_elements=["workflow_uid"])
                ),
            ),
        )
        if run.namespace_id != namespace_id:
            raise PermanentError(
                f"run {ref.workflow_uid} is recorded in namespace {run.namespace.name!r}, "
                f"but this event says {ref.namespace!r}"
            )
        return run

    async def namespace(self, session: AsyncSession, name: str) -> int:
        """The id of the namespace's row, created if new.

        Namespaces are never removed, so their ids are remembered, but only once committed (:meth:`committed`):
        until then another worker's transaction cannot see the row, and a rollback would leave the id pointing at
        nothing.
        """
        if name in self._namespaces:
            return self._namespaces[name]
        pending: dict[str, int] = session.info.setdefault(_PENDING_NAMESPACES, {})
        if name not in pending:
            pending[name] = await get_or_insert(
                session,
                select(NamespaceRow.id).where(NamespaceRow.name == name),
                {},
                lambda: (
                    self.insert(NamespaceRow)
                    .values(name=name, created_at=now())
                    .on_conflict_do_nothing(index_elements=["name"])
                ),
            )
        return pending[name]

    async def prefetch(self, session: AsyncSession, events: Sequence[Event]) -> None:
        """Find the run, step and version rows ``events`` are about, inserting those that are new, in a few
        statements for the whole batch; the events then find them in the transaction (:func:`in_transaction`).

        Runs are locked in the order of their workflow uids, then inserted in that order: two replicas
        recording batches of the same runs at once wait for each other and never deadlock.
        """
        rows: dict[tuple[Any, ...], Any] = session.info.setdefault(_ROWS, {})
        runs: dict[str, RunRef] = {}
        steps: dict[tuple[str, str, int], StepRef] = {}
        versions: dict[str, SnapshotCompleted | SnapshotFailed] = {}
        for event in events:
            match event:
                case RunStarted() | RunFinished():
                    runs.setdefault(event.run.workflow_uid, event.run)
                case StepStarted() | StepFinished():
                    runs.setdefault(event.step.run.workflow_uid, event.step.run)
                    steps.setdefault(_step_key(event.step), event.step)
                case SnapshotCompleted() | SnapshotFailed():
                    runs.setdefault(event.run.workflow_uid, event.run)
                    if event.step is not None:
                        steps.setdefault(_step_key(event.step), event.step)
                    versions.setdefault(event.key.version_id, event)
        wanted = sorted(uid for uid in runs if ("run", uid) not in rows)
        if not wanted:
            return await self._prefetch_steps(session, rows, steps, versions)
        namespaces = {uid: await self.namespace(session, runs[uid].namespace) for uid in wanted}
        found = await self._runs(session, wanted)
        new = [uid for uid in wanted if uid not in found]
        if new:
            await session.execute(
                self.insert(RunRow.__table__).on_conflict_do_nothing(index_elements=["workflow_uid"]),
                [
                    {
                        "workflow_uid": uid,
                        "namespace_id": namespaces[uid],
                        "run_id": runs[uid].run_id,
                        "status": "running",
                        "created_at": now(),
                    }
                    for uid in new
                ],
            )
            found |= await self._runs(session, new)
        for uid, run in found.items():
            rows[("run", uid)] = run
        await self._prefetch_steps(session, rows, steps, versions)

    async def _runs(self, session: AsyncSession, uids: list[str]) -> dict[str, RunRow]:
        query = self._find_runs.where(RunRow.workflow_uid.in_(uids)).order_by(RunRow.workflow_uid)
        return {run.workflow_uid: run for run in (await session.execute(query)).scalars()}

    async def _prefetch_steps(
        self,
        session: AsyncSession,
        rows: dict[tuple[Any, ...], Any],
        steps: dict[tuple[str, str, int], StepRef],
        versions: dict[str, SnapshotCompleted | SnapshotFailed],
    ) -> None:
        run_ids = {uid: rows[("run", uid)].id for uid, _, _ in steps if ("run", uid) in rows}
        keyed = {
            (run_ids[uid], step_id, attempt): ref for (uid, step_id, attempt), ref in steps.items() if uid in run_ids
        }
        wanted = [key for key in keyed if ("step", *key) not in rows]
        if wanted:
            found = await self._steps(session, wanted)
            new = [key for key in wanted if key not in found]
            if new:
                await session.execute(
                    self.insert(StepRow.__table__).on_conflict_do_nothing(
                        index_elements=["file_id", "step_id", "attempt"]
                    ),
                    [
                        {"file_id": f, "step_id": s, "attempt": a, "name": keyed[(f, s, a)].name, "guarded": False}
                        for f, s, a in new
                    ],
                )
                found |= await self._steps(session, new)
            for key, step in found.items():
                rows[("step", *key)] = step
        await self._prefetch_versions(session, rows, versions)

    async def _steps(
        self, session: AsyncSession, keys: list[tuple[int, str, int]]
    ) -> dict[tuple[int, str, int], StepRow]:
        query = select(StepRow).where(
            StepRow.file_id.in_(sorted({f for f, _, _ in keys})), StepRow.step_id.in_(sorted({s for _, s, _ in keys}))
        )
        wanted = set(keys)
        found = {(st.file_id, st.step_id, st.attempt): st for st in (await session.execute(query)).scalars()}
        return {key: step for key, step in found.items() if key in wanted}

    async def _prefetch_versions(
        self,
        session: AsyncSession,
        rows: dict[tuple[Any, ...], Any],
        versions: dict[str, SnapshotCompleted | SnapshotFailed],
    ) -> None:
        wanted = [
            vid for vid, e in versions.items() if ("version", vid) not in rows and ("run", e.run.workflow_uid) in rows
        ]
        if not wanted:
            return
        found = await self._versions(session, wanted)
        new = [vid for vid in wanted if vid not in found]
        if new:
            await session.execute(
                self.insert(VersionRow.__table__).on_conflict_do_nothing(index_elements=["id"]),
                [_new_version(rows[("run", versions[vid].run.workflow_uid)], vid, versions[vid]) for vid in new],
            )
            found |= await self._versions(session, new)
        for vid, version in found.items():
            rows[("version", vid)] = version

    async def _versions(self, session: AsyncSession, ids: list[str]) -> dict[str, VersionRow]:
        query = select(VersionRow).where(VersionRow.id.in_(ids)).options(*NO_RUN)
        return {v.id: v for v in (await session.execute(query)).scalars()}

    def committed(self, session: AsyncSession) -> None:
        """Remember the namespace ids ``session`` looked up or inserted, now that its transaction has committed."""
        self._namespaces.update(session.info.pop(_PENDING_NAMESPACES, {}))

    async def bucket(self, session: AsyncSession, namespace_id: int, experiment: str | None) -> BucketRow:
        """The experiment's bucket (``None``: the namespace's fallback bucket), named when it is created; an
        experiment named as one of the namespace's buckets is that bucket (:func:`experiment_buckets`)."""
        key = experiment or ""
        bucket: BucketRow = await in_transaction(
            session, ("bucket", namespace_id, key), lambda: self._bucket(session, namespace_id, experiment)
        )
        return bucket

    async def _bucket(self, session: AsyncSession, namespace_id: int, experiment: str | None) -> BucketRow:
        key = experiment or ""
        query = experiment_buckets(namespace_id, experiment)
        found = the_bucket((await session.execute(query)).scalars().all(), experiment)
        if found is not None:
            return found
        for _ in range(8):  # a new random suffix if the name is taken
            suffix = names.random_suffix()
            await session.execute(
                self.insert(BucketRow)
                .values(
                    namespace_id=namespace_id,
                    name=names.bucket_name(experiment, suffix),
                    suffix=suffix,
                    experiment_key=key,
                    experiment=experiment,
                    created_at=now(),
                )
                .on_conflict_do_nothing()
            )
            bucket = the_bucket((await session.execute(query)).scalars().all(), experiment)
            if bucket is not None:
                return bucket
        raise PermanentError(f"could not name a bucket for experiment {experiment!r}")

    async def step(self, session: AsyncSession, run: RunRow, ref: StepRef) -> StepRow:
        """The row of the step's attempt, created if new."""
        step: StepRow = await in_transaction(
            session,
            ("step", run.id, ref.step_id, ref.attempt),
            lambda: get_or_insert(
                session,
                _FIND_STEP,
                {"file_id": run.id, "step_id": ref.step_id, "attempt": ref.attempt},
                lambda: (
                    self.insert(StepRow)
                    .values(file_id=run.id, step_id=ref.step_id, attempt=ref.attempt, name=ref.name, guarded=False)
                    .on_conflict_do_nothing(index_elements=["file_id", "step_id", "attempt"])
                ),
                returning=StepRow,
            ),
        )
        step.name = step.name or ref.name
        return step

    async def version(
        self, session: AsyncSession, run: RunRow, event: SnapshotCompleted | SnapshotFailed
    ) -> VersionRow:
        """The row of the version a snapshot event is about, created if new; it names every volume events named."""
        version_id = event.key.version_id
        version: VersionRow = await in_transaction(
            session,
            ("version", version_id),
            lambda: get_or_insert(
                session,
                _FIND_VERSION,
                {"id": version_id},
                lambda: (
                    self.insert(VersionRow)
                    .values(**_new_version(run, version_id, event))
                    .on_conflict_do_nothing(index_elements=["id"])
                ),
                returning=VersionRow,
            ),
        )
        merged = lineage.merge_volumes(version.volumes, [*event.volumes, event.volume.name])
        if merged != version.volumes:
            version.volumes = merged
        return version


def experiment_buckets(namespace_id: Any, experiment: str | None) -> Select[tuple[BucketRow]]:
    """The buckets that may be the experiment's: the one keyed by it, and the one it names (a bucket's own name,
    ``churn-ab3cd``, as ``rok submit`` names the KFP experiment) — :func:`the_bucket` picks."""
    keyed = BucketRow.experiment_key == (experiment or "")
    where = or_(keyed, BucketRow.name == experiment) if experiment else keyed
    return select(BucketRow).where(BucketRow.namespace_id == namespace_id, where)


def the_bucket(found: Sequence[BucketRow], experiment: str | None) -> BucketRow | None:
    """The experiment's bucket among :func:`experiment_buckets`' rows: the one keyed by the experiment first (an
    experiment that had a bucket of its own before another bucket got its name keeps it), else the one it names."""
    key = experiment or ""
    return next((b for b in found if b.experiment_key == key), None) or next(iter(found), None)


def _step_key(ref: StepRef) -> tuple[str, str, int]:
    return (ref.run.workflow_uid, ref.step_id, ref.attempt)


def _new_version(run: RunRow, version_id: str, event: SnapshotCompleted | SnapshotFailed) -> dict[str, Any]:
    """The columns of a new version's row."""
    step = event.step
    return {
        "id": version_id,
        "file_id": run.id,
        "step_key": step.step_id if step else "",
        "attempt": step.attempt if step else 0,
        "phase": event.phase,
        "step_name": step.name if step else None,
        "volumes": list(event.volumes),
        "event_tags": [],
        "tags": [],
        "status": "pending",
        "best_effort": False,
        "created_at": now(),
    }


async def in_transaction(session: AsyncSession, key: tuple[Any, ...], find: Callable[[], Awaitable[T]]) -> T:
    """The row ``find`` gets, found once per transaction: the events of a batch share one transaction, and their
    run's lock (held to its end) keeps every other transaction from changing the run's rows meanwhile."""
    rows: dict[tuple[Any, ...], Any] = session.info.setdefault(_ROWS, {})
    if key not in rows:
        rows[key] = await find()
    found: T = rows[key]
    return found


async def get_or_insert(
    session: AsyncSession,
    query: Select[Any],
    params: dict[str, Any],
    insert: Callable[[], Insert],
    *,
    returning: type[Any] | None = None,
) -> Any:
    """The row ``query`` finds, inserting it first (``ON CONFLICT DO NOTHING``) if it is not there yet.

    ``returning``: the mapped class of a row without eagerly loaded relationships, which the insert then returns
    itself (one statement fewer for a new row).
    """
    found = (await session.execute(query, params)).scalar_one_or_none()
    if found is not None:
        return found
    if returning is not None:
        statement = insert().returning(*returning.__table__.columns)
        found = (await session.execute(select(returning).from_statement(statement).options(*NO_EAGER))).scalar()
        if found is not None:
            return found
    else:
        await session.execute(insert())
    return (await session.execute(query, params)).scalar_one()
