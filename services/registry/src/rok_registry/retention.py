"""Retention: forgetting what the rules of :mod:`rok_registry.keeping` keep not, pins, the record of forgets, and
what the store's gc may remove (the policy that forgets on its own is :mod:`rok_registry.policy`).

Forgetting removes rows: a forgotten version's members and the version; a run left with no version, its steps
and the run. Each forget that removed something is recorded (``forgets``: when, by whom, by which rules) with
every volume snapshot it forgot (``forgotten``), which is what the store's gc asks about
(:meth:`Retention.snapshots`): a snapshot no member records any more and a forget forgot may be removed from
the store. The registry itself never touches the store (it holds no credentials for it).

A bucket's forget is one transaction; on PostgreSQL the bucket's row is locked for it, so two registry replicas
applying the policy at once forget each run once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from rokcommon.errors import InvalidRequest, NotFound
from rokcommon.events import Model
from rokcommon.registry_contract import (
    Forget,
    ForgetLog,
    ForgetRecord,
    ForgetReport,
    ForgottenRun,
    KeepRules,
    Pin,
    Pinned,
    SnapshotsKnown,
    SnapshotStates,
)
from rokcommon.urls import format_url, parse_url_in
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from rok_registry import paging
from rok_registry.database import Database
from rok_registry.keeping import RunFacts, VersionFacts, forgotten_versions, kept_runs
from rok_registry.tables import (
    BucketRow,
    ForgetRow,
    ForgottenRow,
    MemberRow,
    NamespaceRow,
    RunRow,
    StepRow,
    VersionRow,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK = 500  # ids in one IN (…): well within SQLite's and PostgreSQL's limits on bound parameters
POLICY = "policy"  # who forgot, when the registry's own policy did


# --- forgetting ------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    facts: RunFacts
    forgotten: list[str] = field(default_factory=list)
    kept: int = 0

    @property
    def whole(self) -> bool:
        return self.kept == 0


@dataclass
class _Plan:
    """What a forget removes from one bucket."""

    namespace: str
    bucket: str
    runs: list[_Run] = field(default_factory=list)
    members: list[dict[str, Any]] = field(default_factory=list)  # the forgotten versions' stored volumes

    @property
    def versions(self) -> list[str]:
        return [v for run in self.runs for v in run.forgotten]


class Retention:
    """Forget, pin, and answer the store's gc, over one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def answer(self, request: BaseModel, *, budget: int | None = None) -> Model:
        """Answer a request model of :data:`~rokcommon.registry_contract.RETENTION`."""
        match request:
            case Forget():
                return await self.forget(request, budget=budget)
            case Pin(namespace=namespace, url=url, pinned=pinned):
                return await self.pin(namespace, url, pinned=pinned, by=request.requested_by)
            case SnapshotStates(ids=ids):
                return await self.snapshots(ids)
        raise InvalidRequest(f"unknown retention request {type(request).__name__}")

    async def forget(self, q: Forget, *, by: str = "", budget: int | None = None) -> ForgetReport:
        """Forget what no rule keeps, in one bucket or every bucket of the namespace; ``by``: who asks (the
        request's ``requested_by`` when the caller cannot tell)."""
        if not q.rules.keep_last and not q.rules.keep_within:
            raise InvalidRequest(
                "a forget needs --keep-last N or --keep-within DURATION: without either it would keep only "
                "tagged and pinned versions"
            )
        who = by or q.requested_by or "unknown"
        at = datetime.now(UTC)
        plans: list[_Plan] = []
        for bucket_id, bucket, pinned in await self._buckets(q.namespace, q.bucket):
            if pinned:
                continue
            if q.dry_run:
                async with self.db.reading() as s:
                    plan = await self._plan(s, q.namespace, bucket_id, bucket, q.rules)
            else:
                async with self.db.writing() as s:
                    await _lock(s, self.db, select(BucketRow.id).where(BucketRow.id == bucket_id))
                    plan = await self._plan(s, q.namespace, bucket_id, bucket, q.rules)
                    if plan.runs:
                        await self._remove(s, plan, q.rules.describe(), who, at)
            if plan.runs:
                plans.append(plan)
        report = _report(q, plans, who, at, budget)
        log.info(
            "%s %d versions of %d runs in namespace %s (%s)",
            "would forget" if q.dry_run else "forgot",
            report.versions_forgotten,
            report.runs_forgotten,
            q.namespace,
            report.rules,
            extra={
                "audit": "forget",
                "user": who,
                "namespace": q.namespace,
                "bucket": q.bucket or "*",
                "dry_run": q.dry_run,
                "versions": report.versions_forgotten,
                "snapshots": report.snapshots_forgotten,
            },
        )
        return report

    async def _buckets(self, namespace: str, bucket: str | None) -> list[tuple[int, str, bool]]:
        query = (
            select(BucketRow.id, BucketRow.name, BucketRow.pinned)
            .join(NamespaceRow, BucketRow.namespace_id == NamespaceRow.id)
            .where(NamespaceRow.name == namespace)
            .order_by(BucketRow.id)
        )
        if bucket is not None:
            query = query.where(BucketRow.name == bucket)
        async with self.db.reading() as s:
            rows = [(int(i), str(n), bool(p)) for i, n, p in (await s.execute(query)).all()]
        if bucket is not None and not rows:
            raise NotFound(f"no bucket {bucket!r} in namespace {namespace!r}")
        return rows

    async def _plan(self, s: AsyncSession, namespace: str, bucket_id: int, bucket: str, rules: KeepRules) -> _Plan:
        rows = await s.execute(
            select(RunRow.id, RunRow.name, RunRow.started_at, RunRow.created_at, RunRow.status, RunRow.pinned).where(
                RunRow.bucket_id == bucket_id
            )
        )
        runs = [
            RunFacts(id=i, name=n or "", time=started or created, status=status, pinned=bool(pinned))
            for i, n, started, created, status, pinned in rows.all()
        ]
        keep = kept_runs(runs, rules)
        plan = _Plan(namespace, bucket)
        candidates = {r.id: _Run(r) for r in runs if r.id not in keep}
        if not candidates:
            return plan
        by_run: dict[int, list[VersionFacts]] = {run_id: [] for run_id in candidates}
        for ids in _chunks(sorted(candidates)):
            found = await s.execute(
                select(VersionRow.file_id, VersionRow.id, VersionRow.tags, VersionRow.pinned).where(
                    VersionRow.file_id.in_(ids)
                )
            )
            for run_id, version_id, tags, pinned in found.all():
                by_run[run_id].append(VersionFacts(version_id, tuple(tags or ()), bool(pinned)))
        for run_id, versions in by_run.items():
            run = candidates[run_id]
            run.forgotten = sorted(forgotten_versions(versions, rules))
            run.kept = len(versions) - len(run.forgotten)
            if run.forgotten or run.whole:
                plan.runs.append(run)
        names = {v: candidates[r].facts.name for r in by_run for v in candidates[r].forgotten}
        for version_ids in _chunks(sorted(names)):
            members = await s.execute(
                select(
                    MemberRow.version_id, MemberRow.volume, MemberRow.snapshot_id, MemberRow.repository, MemberRow.size
                ).where(MemberRow.version_id.in_(version_ids), MemberRow.snapshot_id.is_not(None))
            )
            for version_id, volume, snapshot_id, repository, size in members.all():
                plan.members.append(
                    {
                        "url": format_url(namespace, bucket, names[version_id], version_id),
                        "volume": volume,
                        "snapshot_id": snapshot_id,
                        "repository": repository,
                        "size": int(size or 0),
                    }
                )
        plan.runs.sort(key=lambda r: (r.facts.time, r.facts.id))
        return plan

    async def _remove(self, s: AsyncSession, plan: _Plan, rules: str, by: str, at: datetime) -> None:
        whole = sorted(r.facts.id for r in plan.runs if r.whole)
        for ids in _chunks(sorted(r.facts.id for r in plan.runs)):
            await _lock(s, self.db, select(RunRow.id).where(RunRow.id.in_(ids)).order_by(RunRow.id))
        for version_ids in _chunks(plan.versions):
            await s.execute(delete(MemberRow).where(MemberRow.version_id.in_(version_ids)))
            await s.execute(delete(VersionRow).where(VersionRow.id.in_(version_ids)))
        for ids in _chunks(whole):
            await s.execute(delete(StepRow).where(StepRow.file_id.in_(ids)))
            await s.execute(delete(RunRow).where(RunRow.id.in_(ids)))
        forget_id = await s.scalar(
            insert(ForgetRow)
            .values(
                namespace=plan.namespace,
                bucket=plan.bucket,
                rules=rules,
                forgotten_by=by[:253],
                forgotten_at=at,
                runs=len(plan.runs),
                versions=len(plan.versions),
            )
            .returning(ForgetRow.id)
        )
        for rows in _chunks(plan.members, 200):
            await s.execute(insert(ForgottenRow), [{"forget_id": forget_id, **m} for m in rows])

    async def forgets(self, namespace: str, *, limit: int = 50) -> ForgetLog:
        """The namespace's ``limit`` latest forgets (each bucket's part of a forget is one), newest first."""
        snapshots = (
            select(func.count(func.distinct(ForgottenRow.snapshot_id)))
            .where(ForgottenRow.forget_id == ForgetRow.id)
            .scalar_subquery()
        )
        query = (
            select(ForgetRow, snapshots)
            .where(ForgetRow.namespace == namespace)
            .order_by(ForgetRow.forgotten_at.desc(), ForgetRow.id.desc())
            .limit(limit)
        )
        async with self.db.reading() as s:
            rows = (await s.execute(query)).all()
        return ForgetLog(
            items=tuple(
                ForgetRecord(
                    bucket=row.bucket,
                    rules=row.rules,
                    by=row.forgotten_by,
                    at=row.forgotten_at,
                    runs=row.runs,
                    versions=row.versions,
                    snapshots=int(count or 0),
                )
                for row, count in rows
            )
        )

    # --- pins ------------------------------------------------------------------------------------------------

    async def pin(self, namespace: str, url: str, *, pinned: bool = True, by: str = "") -> Pinned:
        """Pin (or unpin) the bucket, run or version ``url`` names, in ``namespace``."""
        where = parse_url_in(namespace, url)
        bucket_id = (
            select(BucketRow.id)
            .join(NamespaceRow, BucketRow.namespace_id == NamespaceRow.id)
            .where(NamespaceRow.name == namespace, BucketRow.name == where.bucket)
            .scalar_subquery()
        )
        async with self.db.writing() as s:
            if where.version is not None:
                run_id = select(RunRow.id).where(RunRow.bucket_id == bucket_id, RunRow.name == where.file)
                changed = await s.execute(
                    update(VersionRow)
                    .where(VersionRow.id == where.version, VersionRow.file_id.in_(run_id.scalar_subquery()))
                    .values(pinned=pinned)
                )
                kind, what = "version", f"no version {where.version!r} in {where.bucket}/{where.file}"
            elif where.file is not None:
                changed = await s.execute(
                    update(RunRow).where(RunRow.bucket_id == bucket_id, RunRow.name == where.file).values(pinned=pinned)
                )
                kind, what = "file", f"no run {where.file!r} in bucket {where.bucket!r}"
            else:
                changed = await s.execute(update(BucketRow).where(BucketRow.id == bucket_id).values(pinned=pinned))
                kind, what = "bucket", f"no bucket {where.bucket!r}"
            if not getattr(changed, "rowcount", 0):
                raise NotFound(f"{what} of namespace {namespace!r} ({url})")
        canonical = str(where.model_copy(update={"volume": None}))
        log.info(
            "%s %s",
            "pinned" if pinned else "unpinned",
            canonical,
            extra={"audit": "pin", "user": by or "unknown", "namespace": namespace, "pinned": pinned},
        )
        return Pinned(url=canonical, kind=kind, pinned=pinned)

    # --- what the store's gc asks ----------------------------------------------------------------------------

    async def snapshots(self, ids: Sequence[str]) -> SnapshotsKnown:
        """Of ``ids``, those a version still records, and those only forgotten ones did."""
        asked = sorted(set(ids))
        recorded: set[str] = set()
        forgotten: set[str] = set()
        async with self.db.reading() as s:
            for chunk in _chunks(asked):
                rows = await s.execute(select(MemberRow.snapshot_id).where(MemberRow.snapshot_id.in_(chunk)).distinct())
                recorded.update(str(r) for r in rows.scalars())
                rows = await s.execute(
                    select(ForgottenRow.snapshot_id).where(ForgottenRow.snapshot_id.in_(chunk)).distinct()
                )
                forgotten.update(str(r) for r in rows.scalars())
        return SnapshotsKnown(recorded=tuple(sorted(recorded)), forgotten=tuple(sorted(forgotten - recorded)))

    async def namespaces(self) -> list[str]:
        async with self.db.reading() as s:
            return [str(n) for n in (await s.execute(select(NamespaceRow.name).order_by(NamespaceRow.name))).scalars()]


# --- helpers ---------------------------------------------------------------------------------------------------


async def _lock(s: AsyncSession, db: Database, query: Any) -> None:
    """Lock the rows ``query`` selects for the transaction (PostgreSQL; SQLite has one writer at a time)."""
    if not db.is_sqlite:
        await s.execute(query.with_for_update())


def _chunks(items: Sequence[T], size: int = CHUNK) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _report(q: Forget, plans: list[_Plan], by: str, at: datetime, budget: int | None) -> ForgetReport:
    runs = [
        ForgottenRun(
            bucket=plan.bucket,
            file=run.facts.name,
            url=format_url(q.namespace, plan.bucket, run.facts.name),
            whole=run.whole,
            versions_forgotten=len(run.forgotten),
            versions_kept=run.kept,
        )
        for plan in plans
        for run in plan.runs
    ]
    listed = paging.within(runs, budget)
    members = [m for plan in plans for m in plan.members]
    return ForgetReport(
        namespace=q.namespace,
        dry_run=q.dry_run,
        rules=q.rules.describe(),
        by=by,
        at=at,
        runs_forgotten=len(runs),
        runs_removed=sum(1 for r in runs if r.whole),
        versions_forgotten=sum(len(plan.versions) for plan in plans),
        snapshots_forgotten=len({m["snapshot_id"] for m in members}),
        bytes_forgotten=sum(m["size"] for m in members),
        runs_listed=len(listed),
        runs=tuple(listed),
    )
