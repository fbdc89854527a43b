"""The query layer: what the NATS handlers, the HTTP API and the web pages ask, in one place.

Every method is scoped to a namespace and returns the models of :mod:`rokcommon.registry_client`. A URL of
another namespace is :class:`~rokcommon.errors.Forbidden`; what does not exist is
:class:`~rokcommon.errors.NotFound`; a malformed request is :class:`~rokcommon.errors.InvalidRequest`.
Runs whose ``RunStarted`` has not been recorded yet have no bucket or name, and are not listed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from rokcommon.errors import Forbidden, InvalidRequest, NotFound
from rokcommon.events import Model as Result
from rokcommon.events import Phase
from rokcommon.registry_client import (
    Bucket,
    Buckets,
    FailedVolume,
    Files,
    FindVersion,
    Found,
    GetLineage,
    GetVersion,
    Lineage,
    ListBuckets,
    ListFiles,
    ListVersions,
    Member,
    Query,
    Resolve,
    Resolved,
    RokUrl,
    RunFile,
    Search,
    SearchHit,
    SearchHits,
    Step,
    Version,
    Versions,
    format_url,
    parse_url,
)
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from rok_registry.database import Database
from rok_registry.tables import BucketRow, FileRow, MemberRow, NamespaceRow, StepRow, VersionRow

_LATER = datetime.max.replace(tzinfo=UTC)
T = TypeVar("T")


class Queries:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def answer(self, request: Query) -> Result:
        """Answer a request model of :data:`~rokcommon.registry_client.QUERIES`."""
        ns = request.namespace
        match request:
            case ListBuckets():
                return Buckets(items=tuple(await self.list_buckets(ns)))
            case ListFiles(bucket=bucket):
                return Files(items=tuple(await self.list_files(ns, bucket)))
            case ListVersions(bucket=bucket, file=file):
                return Versions(items=tuple(await self.list_versions(ns, bucket, file)))
            case GetVersion(url=url):
                return await self.get_version(ns, url)
            case Resolve(url=url):
                return await self.resolve(ns, url)
            case GetLineage(bucket=bucket, file=file):
                return await self.lineage(ns, bucket, file)
            case FindVersion():
                version = await self.find_version(
                    ns, request.workflow_uid, request.step_id, request.phase, attempt=request.attempt
                )
                return Found(version=version)
            case Search(text=text, limit=limit):
                return SearchHits(items=tuple(await self.search(ns, text, limit=limit)))
        raise InvalidRequest(f"unknown query {type(request).__name__}")

    # --- lists --------------------------------------------------------------------------------------------

    async def list_buckets(self, namespace: str) -> list[Bucket]:
        async with self.db.reading() as s:
            files = select(FileRow.bucket_id, func.count().label("n")).group_by(FileRow.bucket_id).subquery()
            rows = await s.execute(
                select(BucketRow, func.coalesce(files.c.n, 0))
                .join(NamespaceRow, BucketRow.namespace_id == NamespaceRow.id)
                .outerjoin(files, files.c.bucket_id == BucketRow.id)
                .where(NamespaceRow.name == namespace)
                .order_by(BucketRow.created_at.desc(), BucketRow.name)
            )
            return [_bucket(b, n) for b, n in rows.all()]

    async def list_files(self, namespace: str, bucket: str) -> list[RunFile]:
        async with self.db.reading() as s:
            b = await self._bucket(s, namespace, bucket)
            counts = select(VersionRow.file_id, func.count().label("n")).group_by(VersionRow.file_id).subquery()
            rows = await s.execute(
                select(FileRow, func.coalesce(counts.c.n, 0))
                .outerjoin(counts, counts.c.file_id == FileRow.id)
                .where(FileRow.bucket_id == b.id)
                .order_by(FileRow.started_at.desc(), FileRow.name)
            )
            return [_file(f, n) for f, n in rows.all()]

    async def list_versions(self, namespace: str, bucket: str, file: str) -> list[Version]:
        async with self.db.reading() as s:
            run = await self._file(s, namespace, bucket, file)
            return [_version(v) for v in _in_order(await self._versions(s, run.id))]

    # --- one version --------------------------------------------------------------------------------------

    async def get_version(self, namespace: str, url: str) -> Version:
        async with self.db.reading() as s:
            return _version(await self._version_at(s, namespace, url))

    async def resolve(self, namespace: str, url: str) -> Resolved:
        """The version a URL names and its members: all of them, or the one of ``&volume=``."""
        async with self.db.reading() as s:
            row = await self._version_at(s, namespace, url)
        version = _version(row)
        volume = parse_url(url).volume
        members = version.members
        if volume is not None:
            failed = {f.volume: f.reason for f in version.failed}
            if volume in failed:
                raise NotFound(f"volume {volume!r} of version {version.id} was not stored: {failed[volume]}")
            members = tuple(m for m in version.members if m.volume == volume)
            if not members:
                raise NotFound(
                    f"version {version.id} has no volume {volume!r}; it has {', '.join(version.volumes) or 'none'}"
                )
        return Resolved(url=url, version=version, members=members)

    async def find_version(
        self, namespace: str, workflow_uid: str, step_id: str | None, phase: Phase, *, attempt: int | None = None
    ) -> Version | None:
        """The version of a run's step and phase (latest attempt unless one is given), or None if not recorded."""
        async with self.db.reading() as s:
            run = (await s.execute(select(FileRow).where(FileRow.workflow_uid == workflow_uid))).scalar_one_or_none()
            if run is None or run.bucket_id is None:
                return None
            if run.namespace.name != namespace:
                raise Forbidden(f"run {workflow_uid} belongs to another namespace than {namespace!r}")
            query = select(VersionRow).where(
                VersionRow.file_id == run.id, VersionRow.step_key == (step_id or ""), VersionRow.phase == phase
            )
            if attempt is not None:
                query = query.where(VersionRow.attempt == attempt)
            row = (await s.execute(query.order_by(VersionRow.attempt.desc()).limit(1))).scalar_one_or_none()
            return _version(row) if row else None

    # --- a run --------------------------------------------------------------------------------------------

    async def lineage(self, namespace: str, bucket: str, file: str) -> Lineage:
        """A run's initial version, then its steps in the order they started, with before and after versions."""
        async with self.db.reading() as s:
            run = await self._file(s, namespace, bucket, file)
            versions = await self._versions(s, run.id)
            steps = (await s.execute(select(StepRow).where(StepRow.file_id == run.id))).scalars().all()
        by_key = {(v.step_key, v.attempt, v.phase): _version(v) for v in versions}
        lineage_steps = [
            Step(
                step_id=st.step_id,
                name=st.name,
                attempt=st.attempt,
                node=st.node,
                guarded=st.guarded,
                started_at=st.started_at,
                finished_at=st.finished_at,
                outcome=st.outcome,
                before=by_key.get((st.step_id, st.attempt, "before")),
                after=by_key.get((st.step_id, st.attempt, "after")),
            )
            for st in steps
        ]
        lineage_steps.sort(key=_step_order)
        initial = next((by_key[k] for k in by_key if k[2] == "initial"), None)
        return Lineage(file=_file(run, len(versions)), initial=initial, steps=tuple(lineage_steps))

    async def search(self, namespace: str, text: str, *, limit: int = 50) -> list[SearchHit]:
        """Buckets, runs and versions whose name, experiment, run, pipeline or id contains ``text``, or a URL."""
        text = text.strip()
        if text.startswith("rok://"):
            return [await self._url_hit(namespace, text)]
        like = f"%{text.lower()}%"
        hits: list[SearchHit] = []
        async with self.db.reading() as s:
            ns = NamespaceRow.name == namespace
            buckets = await s.execute(
                select(BucketRow)
                .join(NamespaceRow, BucketRow.namespace_id == NamespaceRow.id)
                .where(ns, or_(func.lower(BucketRow.name).like(like), func.lower(BucketRow.experiment).like(like)))
                .limit(limit)
            )
            hits += [_bucket_hit(b) for b in buckets.scalars()]
            fields = (FileRow.name, FileRow.run_name, FileRow.run_id, FileRow.pipeline_name, FileRow.workflow_uid)
            files = await s.execute(
                select(FileRow)
                .join(NamespaceRow, FileRow.namespace_id == NamespaceRow.id)
                .where(ns, FileRow.bucket_id.is_not(None), or_(*(func.lower(f).like(like) for f in fields)))
                .limit(limit)
            )
            hits += [_file_hit(f) for f in files.scalars()]
            versions = await s.execute(
                select(VersionRow)
                .join(FileRow, VersionRow.file_id == FileRow.id)
                .join(NamespaceRow, FileRow.namespace_id == NamespaceRow.id)
                .where(ns, FileRow.bucket_id.is_not(None), func.lower(VersionRow.id).like(like))
                .limit(limit)
            )
            hits += [_version_hit(v) for v in versions.scalars()]
        return hits[:limit]

    # --- lookups ------------------------------------------------------------------------------------------

    async def _bucket(self, s: AsyncSession, namespace: str, name: str) -> BucketRow:
        row = (
            await s.execute(
                select(BucketRow)
                .join(NamespaceRow, BucketRow.namespace_id == NamespaceRow.id)
                .where(NamespaceRow.name == namespace, BucketRow.name == name)
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no bucket {name!r} in namespace {namespace!r}")
        return row

    async def _file(self, s: AsyncSession, namespace: str, bucket: str, name: str) -> FileRow:
        b = await self._bucket(s, namespace, bucket)
        row = (
            await s.execute(select(FileRow).where(FileRow.bucket_id == b.id, FileRow.name == name))
        ).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no run {name!r} in bucket {bucket!r} of namespace {namespace!r}")
        return row

    async def _versions(self, s: AsyncSession, file_id: int) -> list[VersionRow]:
        return list((await s.execute(select(VersionRow).where(VersionRow.file_id == file_id))).scalars().all())

    async def _version_at(self, s: AsyncSession, namespace: str, url: str) -> VersionRow:
        where = _scoped(namespace, url)
        if where.version is None:
            raise InvalidRequest(f"{url!r} names no version: add ?version=<id>")
        row = (await s.execute(select(VersionRow).where(VersionRow.id == where.version))).scalar_one_or_none()
        run = row.file if row else None
        if row is None or run is None or run.bucket is None:
            raise NotFound(f"no version {where.version!r} in namespace {namespace!r} ({url})")
        if run.namespace.name != namespace:
            raise Forbidden(f"version {where.version} belongs to another namespace than {namespace!r}")
        if run.bucket.name != where.bucket or run.name != where.file:
            raise NotFound(f"version {where.version} is not in {where.bucket}/{where.file}: it is {_version(row).url}")
        return row

    async def _url_hit(self, namespace: str, url: str) -> SearchHit:
        where = _scoped(namespace, url)
        if where.version is not None:
            return _version_hit(await self._in_session(lambda s: self._version_at(s, namespace, url)))
        if where.file is not None:
            return _file_hit(await self._in_session(lambda s: self._file(s, namespace, where.bucket, where.file)))
        return _bucket_hit(await self._in_session(lambda s: self._bucket(s, namespace, where.bucket)))

    async def _in_session(self, lookup: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async with self.db.reading() as s:
            return await lookup(s)


def _scoped(namespace: str, url: str) -> RokUrl:
    parsed = parse_url(url)
    if parsed.namespace != namespace:
        raise Forbidden(f"{url} belongs to namespace {parsed.namespace!r}; you are asking from namespace {namespace!r}")
    return parsed


# --- rows → results -----------------------------------------------------------------------------------------


def _bucket(row: BucketRow, files: int = 0) -> Bucket:
    ns = row.namespace.name
    return Bucket(
        namespace=ns,
        name=row.name,
        url=format_url(ns, row.name),
        experiment=row.experiment,
        created_at=row.created_at,
        files=files,
    )


def _file(row: FileRow, versions: int = 0) -> RunFile:
    assert row.bucket is not None and row.name is not None
    ns = row.namespace.name
    return RunFile(
        namespace=ns,
        bucket=row.bucket.name,
        name=row.name,
        url=format_url(ns, row.bucket.name, row.name),
        pipeline_name=row.pipeline_name,
        pipeline_version=row.pipeline_version,
        run_id=row.run_id,
        run_name=row.run_name,
        workflow_uid=row.workflow_uid,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        versions=versions,
    )


def _version(row: VersionRow) -> Version:
    run = row.file
    assert run.bucket is not None and run.name is not None
    ns, bucket = run.namespace.name, run.bucket.name
    url = format_url(ns, bucket, run.name, row.id)
    stored = sorted(
        (m for m in row.members if m.status == "complete"), key=lambda m: (m.role != "workspace", m.position)
    )
    members = tuple(_member(m, ns, bucket, run.name, row.id) for m in stored)
    failed = tuple(FailedVolume(volume=m.volume, reason=m.reason or "") for m in row.members if m.status == "failed")
    return Version(
        id=row.id,
        url=url,
        namespace=ns,
        bucket=bucket,
        file=run.name,
        workflow_uid=run.workflow_uid,
        run_id=run.run_id,
        step_id=row.step_key or None,
        step_name=row.step_name,
        attempt=row.attempt,
        phase=row.phase,
        tags=tuple(t for t in row.tags.split(",") if t),
        taken_at=row.taken_at,
        status=row.status,
        best_effort=row.best_effort,
        volumes=tuple(row.volume_names),
        members=members,
        failed=failed,
        size=sum(m.size for m in members),
        bytes_new=sum(m.bytes_new for m in members),
    )


def _member(row: MemberRow, ns: str, bucket: str, file: str, version: str) -> Member:
    assert row.snapshot_id is not None
    return Member(
        volume=row.volume,
        role=row.role,
        snapshot_id=row.snapshot_id,
        repository=row.repository or "",
        size=row.size,
        bytes_new=row.bytes_new,
        files=row.files,
        url=format_url(ns, bucket, file, version, row.volume),
    )


def _bucket_hit(row: BucketRow) -> SearchHit:
    b = _bucket(row)
    return SearchHit(kind="bucket", url=b.url, title=row.experiment or row.name, bucket=row.name)


def _file_hit(row: FileRow) -> SearchHit:
    f = _file(row)
    return SearchHit(kind="file", url=f.url, title=row.run_name or row.run_id, bucket=f.bucket, file=f.name)


def _version_hit(row: VersionRow) -> SearchHit:
    v = _version(row)
    step = f"{v.step_name or v.step_id} ({v.phase})" if v.step_id else v.phase
    return SearchHit(kind="version", url=v.url, title=f"{v.file}: {step}", bucket=v.bucket, file=v.file, version=v.id)


_PHASE_ORDER = {"initial": 0, "before": 1, "after": 2}


def _in_order(versions: list[VersionRow]) -> list[VersionRow]:
    return sorted(versions, key=lambda v: (v.taken_at or _LATER, _PHASE_ORDER.get(v.phase, 3), v.id))


def _step_order(step: Step) -> tuple[datetime, str, int]:
    first = step.started_at or (step.before.taken_at if step.before else None) or step.finished_at or _LATER
    return (first, step.step_id, step.attempt)
