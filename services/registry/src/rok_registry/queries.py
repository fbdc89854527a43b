"""The query layer: what the NATS handlers, the HTTP API and the web pages ask, in one place.

Every method is scoped to a namespace and returns the models of :mod:`rokcommon.registry_client`. A URL of
another namespace is :class:`~rokcommon.errors.Forbidden`; what does not exist is
:class:`~rokcommon.errors.NotFound`; a malformed request is :class:`~rokcommon.errors.InvalidRequest`.
Runs whose ``RunStarted`` has not been recorded yet have no bucket or name, and are not listed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rokcommon.errors import Forbidden, InvalidRequest, NotFound
from rokcommon.events import Model as Result
from rokcommon.events import Phase
from rokcommon.registry_contract import (
    SEARCH_TEXT_MAX,
    Bucket,
    Buckets,
    Files,
    FindVersion,
    Found,
    GetLineage,
    GetVersion,
    Lineage,
    ListBuckets,
    ListFiles,
    ListVersions,
    Query,
    Resolve,
    Resolved,
    RunFile,
    Search,
    SearchHit,
    SearchHits,
    Step,
    Version,
    Versions,
)
from rokcommon.urls import RokUrl, parse_url
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from rok_registry import views
from rok_registry.database import Database
from rok_registry.tables import BucketRow, NamespaceRow, RunRow, StepRow, VersionRow

T = TypeVar("T")


class Queries:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def answer(self, request: Query) -> Result:
        """Answer a request model of :data:`~rokcommon.registry_contract.QUERIES`."""
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

    async def namespaces(self) -> list[str]:
        """Every namespace the registry holds lineage of (for the pages' namespace switcher)."""
        async with self.db.reading() as s:
            return list((await s.execute(select(NamespaceRow.name).order_by(NamespaceRow.name))).scalars())

    async def list_buckets(self, namespace: str) -> list[Bucket]:
        async with self.db.reading() as s:
            runs = select(RunRow.bucket_id, func.count().label("n")).group_by(RunRow.bucket_id).subquery()
            rows = await s.execute(
                select(BucketRow, func.coalesce(runs.c.n, 0))
                .join(NamespaceRow, BucketRow.namespace_id == NamespaceRow.id)
                .outerjoin(runs, runs.c.bucket_id == BucketRow.id)
                .where(NamespaceRow.name == namespace)
                .order_by(BucketRow.created_at.desc(), BucketRow.name)
            )
            return [views.bucket(b, n) for b, n in rows.all()]

    async def list_files(self, namespace: str, bucket: str) -> list[RunFile]:
        async with self.db.reading() as s:
            b = await self._bucket(s, namespace, bucket)
            counts = select(VersionRow.file_id, func.count().label("n")).group_by(VersionRow.file_id).subquery()
            rows = await s.execute(
                select(RunRow, func.coalesce(counts.c.n, 0))
                .outerjoin(counts, counts.c.file_id == RunRow.id)
                .where(RunRow.bucket_id == b.id)
                .order_by(RunRow.started_at.desc(), RunRow.name)
            )
            return [views.run_file(r, n) for r, n in rows.all()]

    async def list_versions(self, namespace: str, bucket: str, file: str) -> list[Version]:
        async with self.db.reading() as s:
            run = await self._run(s, namespace, bucket, file)
            return [views.version(v) for v in views.in_order(await self._versions(s, run.id))]

    # --- one version --------------------------------------------------------------------------------------

    async def get_version(self, namespace: str, url: str) -> Version:
        async with self.db.reading() as s:
            return views.version(await self._version_at(s, namespace, url))

    async def resolve(self, namespace: str, url: str) -> Resolved:
        """The version a URL names and its members: all of them, or the one of ``&volume=``."""
        async with self.db.reading() as s:
            row = await self._version_at(s, namespace, url)
        version = views.version(row)
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
            run = (await s.execute(select(RunRow).where(RunRow.workflow_uid == workflow_uid))).scalar_one_or_none()
            if run is None or run.bucket_id is None or run.namespace.name != namespace:
                return None  # another namespace's run is as unknown here as one not recorded
            query = select(VersionRow).where(
                VersionRow.file_id == run.id, VersionRow.step_key == (step_id or ""), VersionRow.phase == phase
            )
            if attempt is not None:
                query = query.where(VersionRow.attempt == attempt)
            row = (await s.execute(query.order_by(VersionRow.attempt.desc()).limit(1))).scalar_one_or_none()
            return views.version(row) if row else None

    # --- a run --------------------------------------------------------------------------------------------

    async def lineage(self, namespace: str, bucket: str, file: str) -> Lineage:
        """A run's initial version, then its steps in the order they started, with before and after versions."""
        async with self.db.reading() as s:
            run = await self._run(s, namespace, bucket, file)
            versions = await self._versions(s, run.id)
            steps = (await s.execute(select(StepRow).where(StepRow.file_id == run.id))).scalars().all()
        by_key = {(v.step_key, v.attempt, v.phase): views.version(v) for v in versions}
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
        lineage_steps.sort(key=views.step_order)
        initial = next((by_key[k] for k in by_key if k[2] == "initial"), None)
        return Lineage(file=views.run_file(run, len(versions)), initial=initial, steps=tuple(lineage_steps))

    async def search(self, namespace: str, text: str, *, limit: int = 50) -> list[SearchHit]:
        """Buckets, runs and versions whose name, experiment, run, pipeline or id contains ``text``, or a URL."""
        text = text.strip()
        if len(text) > SEARCH_TEXT_MAX:
            raise InvalidRequest(f"a search query has at most {SEARCH_TEXT_MAX} characters, not {len(text)}")
        if text.startswith("rok://"):
            return [await self._url_hit(namespace, text)]
        needle = text.lower()

        def like(column: Any) -> Any:  # '%' and '_' in what the user typed are matched literally
            return func.lower(column).contains(needle, autoescape=True)

        hits: list[SearchHit] = []
        async with self.db.reading() as s:
            ns = NamespaceRow.name == namespace
            buckets = await s.execute(
                select(BucketRow)
                .join(NamespaceRow, BucketRow.namespace_id == NamespaceRow.id)
                .where(ns, or_(like(BucketRow.name), like(BucketRow.experiment)))
                .limit(limit)
            )
            hits += [views.bucket_hit(b) for b in buckets.scalars()]
            fields = (RunRow.name, RunRow.run_name, RunRow.run_id, RunRow.pipeline_name, RunRow.workflow_uid)
            runs = await s.execute(
                select(RunRow)
                .join(NamespaceRow, RunRow.namespace_id == NamespaceRow.id)
                .where(ns, RunRow.bucket_id.is_not(None), or_(*(like(f) for f in fields)))
                .limit(limit)
            )
            hits += [views.file_hit(r) for r in runs.scalars()]
            versions = await s.execute(
                select(VersionRow)
                .join(RunRow, VersionRow.file_id == RunRow.id)
                .join(NamespaceRow, RunRow.namespace_id == NamespaceRow.id)
                .where(ns, RunRow.bucket_id.is_not(None), like(VersionRow.id))
                .limit(limit)
            )
            hits += [views.version_hit(v) for v in versions.scalars()]
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

    async def _run(self, s: AsyncSession, namespace: str, bucket: str, name: str) -> RunRow:
        """The run a URL names by its bucket and file name."""
        b = await self._bucket(s, namespace, bucket)
        row = (
            await s.execute(select(RunRow).where(RunRow.bucket_id == b.id, RunRow.name == name))
        ).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no run {name!r} in bucket {bucket!r} of namespace {namespace!r}")
        return row

    async def _versions(self, s: AsyncSession, run_id: int) -> list[VersionRow]:
        return list((await s.execute(select(VersionRow).where(VersionRow.file_id == run_id))).scalars().all())

    async def _version_at(self, s: AsyncSession, namespace: str, url: str) -> VersionRow:
        where = _scoped(namespace, url)
        if where.version is None:
            raise InvalidRequest(f"{url!r} names no version: add ?version=<id>")
        row = (await s.execute(select(VersionRow).where(VersionRow.id == where.version))).scalar_one_or_none()
        run = row.run if row else None
        # another namespace's version is as unknown here as one that does not exist: the answer reveals nothing
        if row is None or run is None or run.bucket is None or run.namespace.name != namespace:
            raise NotFound(f"no version {where.version!r} in namespace {namespace!r} ({url})")
        if run.bucket.name != where.bucket or run.name != where.file:
            actual = views.version(row).url
            raise NotFound(f"version {where.version} is not in {where.bucket}/{where.file}: it is {actual}")
        return row

    async def _url_hit(self, namespace: str, url: str) -> SearchHit:
        where = _scoped(namespace, url)
        if where.version is not None:
            return views.version_hit(await self._in_session(lambda s: self._version_at(s, namespace, url)))
        if where.file is not None:
            return views.file_hit(await self._in_session(lambda s: self._run(s, namespace, where.bucket, where.file)))
        return views.bucket_hit(await self._in_session(lambda s: self._bucket(s, namespace, where.bucket)))

    async def _in_session(self, lookup: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async with self.db.reading() as s:
            return await lookup(s)


def _scoped(namespace: str, url: str) -> RokUrl:
    parsed = parse_url(url)
    if parsed.namespace != namespace:
        raise Forbidden(f"{url} belongs to namespace {parsed.namespace!r}; you are asking from namespace {namespace!r}")
    return parsed
