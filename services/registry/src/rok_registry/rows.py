"""The rows an event is recorded into, found on their natural keys or inserted (``INSERT … ON CONFLICT DO NOTHING``).

A redelivered or duplicated event finds the rows its first delivery inserted; two replicas inserting the same row
at once end with one. The run's row is locked for the transaction (``SELECT … FOR UPDATE`` on PostgreSQL), so
that the events of one run are recorded one after the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from rokcommon.errors import PermanentError
from rokcommon.events import RunRef, SnapshotCompleted, SnapshotFailed, StepRef
from sqlalchemy import Insert, Select, bindparam, select
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

    def committed(self, session: AsyncSession) -> None:
        """Remember the namespace ids ``session`` looked up or inserted, now that its transaction has committed."""
        self._namespaces.update(session.info.pop(_PENDING_NAMESPACES, {}))

    async def bucket(self, session: AsyncSession, namespace_id: int, experiment: str | None) -> BucketRow:
        """The experiment's bucket (``None``: the namespace's fallback bucket), named when it is created."""
        key = experiment or ""
        query = select(BucketRow).where(BucketRow.namespace_id == namespace_id, BucketRow.experiment_key == key)
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
            bucket = (await session.execute(query)).scalar_one_or_none()
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
        step = event.step
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
                    .values(
                        id=version_id,
                        file_id=run.id,
                        step_key=step.step_id if step else "",
                        attempt=step.attempt if step else 0,
                        phase=event.phase,
                        step_name=step.name if step else None,
                        volumes=list(event.volumes),
                        event_tags=[],
                        tags=[],
                        status="pending",
                        best_effort=False,
                        created_at=now(),
                    )
                    .on_conflict_do_nothing(index_elements=["id"])
                ),
                returning=VersionRow,
            ),
        )
        merged = lineage.merge_volumes(version.volumes, [*event.volumes, event.volume.name])
        if merged != version.volumes:
            version.volumes = merged
        return version


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
