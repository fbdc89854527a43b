"""The query layer: what the NATS handlers, the HTTP API and the web pages ask, in one place.

Every method is scoped to a namespace and returns the models of :mod:`rokcommon.registry_client`. A URL of
another namespace is :class:`~rokcommon.errors.Forbidden`; what does not exist is
:class:`~rokcommon.errors.NotFound`; a malformed request is :class:`~rokcommon.errors.InvalidRequest`.
Runs whose ``RunStarted`` has not been recorded yet have no bucket or name, and are not listed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rokcommon.errors import InvalidRequest, NotFound
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
    Order,
    PageQuery,
    Query,
    Resolve,
    Resolved,
    RunFile,
    Search,
    SearchHit,
    SearchHits,
    Version,
    Versions,
)
from rokcommon.urls import parse_url, parse_url_in
from sqlalchemy import func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from rok_registry import paging, views
from rok_registry.database import Database
from rok_registry.rows import experiment_buckets, the_bucket
from rok_registry.tables import BucketRow, NamespaceRow, RunRow, StepRow, UtcDateTime, VersionRow

T = TypeVar("T")
M = TypeVar("M", bound=Result)


class Queries:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def answer(self, request: Query, *, budget: int | None = None) -> Result:
        """Answer a request model of :data:`~rokcommon.registry_contract.QUERIES`.

        ``budget``: the bytes the answer may take, at most (pages hold fewer items to stay within it).
        """
        ns = request.namespace
        match request:
            case ListBuckets():
                return await self.buckets(request, budget=budget)
            case ListFiles():
                return await self.files(request, budget=budget)
            case ListVersions():
                return await self.versions(request, budget=budget)
            case GetVersion(url=url):
                return await self.get_version(ns, url)
            case Resolve(url=url):
                return await self.resolve(ns, url)
            case GetLineage():
                return await self.lineage_page(request, budget=budget)
            case FindVersion():
                version = await self.find_version(
                    ns, request.workflow_uid, request.step_id, request.phase, attempt=request.attempt
                )
                return Found(version=version)
            case Search(text=text, limit=limit):
                return SearchHits(items=tuple(await self.search(ns, text, limit=limit, budget=budget)))
        raise InvalidRequest(f"unknown query {type(request).__name__}")

    # --- lists, a page at a time --------------------------------------------------------------------------

    async def buckets(self, q: ListBuckets, *, budget: int | None = None) -> Buckets:
        """A page of the namespace's buckets, newest first unless ``q.order`` is oldest."""
        cursor = _cursor(q.cursor, q.order)
        async with self.db.reading() as s:
            namespace_id = select(NamespaceRow.id).where(NamespaceRow.name == q.namespace).scalar_subquery()
            where = BucketRow.namespace_id == namespace_id
            rows = (
                await s.execute(_BUCKETS.select(select(BucketRow).where(where), q.order, cursor, q.limit))
            ).scalars()
            buckets = list(rows.all())
            runs = await _counts(s, RunRow.bucket_id, [b.id for b in buckets])
            total = await _count(s, BucketRow, where)
        views_ = [(b, views.bucket(b, runs.get(b.id, 0))) for b in buckets]
        page = _fill(views_, lambda b: (b.created_at, b.id), q, cursor, budget, "a bucket")
        return Buckets(items=tuple(v for _, v in page.rows), next=page.next, prev=page.prev, total=total)

    async def experiment_bucket(self, namespace: str, experiment: str) -> Bucket | None:
        """The experiment's bucket (or the bucket ``experiment`` names), if it has one yet."""
        async with self.db.reading() as s:
            namespace_id = select(NamespaceRow.id).where(NamespaceRow.name == namespace).scalar_subquery()
            found = the_bucket(
                (await s.execute(experiment_buckets(namespace_id, experiment))).scalars().all(), experiment
            )
            if found is None:
                return None
            runs = await _counts(s, RunRow.bucket_id, [found.id])
        return views.bucket(found, runs.get(found.id, 0))

    async def files(self, q: ListFiles, *, budget: int | None = None) -> Files:
        """A page of a bucket's runs, newest first (by when they started), optionally only those in ``q.status``."""
        cursor = _cursor(q.cursor, q.order)
        async with self.db.reading() as s:
            bucket = await self._bucket(s, q.namespace, q.bucket)
            where = [RunRow.bucket_id == bucket.id]
            if q.status is not None:
                where.append(RunRow.status == q.status)
            query = _FILES.select(select(RunRow).where(*where), q.order, cursor, q.limit)
            runs = list((await s.execute(query)).scalars().all())
            versions = await _counts(s, VersionRow.file_id, [r.id for r in runs])
            total = await _count(s, RunRow, *where)
        views_ = [(r, views.run_file(r, versions.get(r.id, 0))) for r in runs]
        page = _fill(views_, lambda r: (r.started_at, r.id), q, cursor, budget, "a run")
        return Files(items=tuple(v for _, v in page.rows), next=page.next, prev=page.prev, total=total)

    async def versions(self, q: ListVersions, *, budget: int | None = None) -> Versions:
        """A page of a run's versions, newest first (by when they were taken), optionally of one step or status."""
        cursor = _cursor(q.cursor, q.order)
        async with self.db.reading() as s:
            run = await self._run(s, q.namespace, q.bucket, q.file)
            where = [VersionRow.file_id == run.id]
            if q.step is not None:
                where.append(or_(VersionRow.step_name == q.step, VersionRow.step_key == q.step))
            if q.status is not None:
                where.append(VersionRow.status == q.status)
            query = _VERSIONS.select(select(VersionRow).where(*where), q.order, cursor, q.limit)
            rows = list((await s.execute(query)).scalars().all())
            total = await _count(s, VersionRow, *where)
        views_ = [(v, views.version(v)) for v in rows]
        page = _fill(views_, lambda v: (v.taken_at or v.created_at, v.id), q, cursor, budget, "a version")
        return Versions(items=tuple(v for _, v in page.rows), next=page.next, prev=page.prev, total=total)

    async def namespaces(self) -> list[str]:
        """Every namespace the registry holds lineage of (for the pages' namespace switcher)."""
        async with self.db.reading() as s:
            return list((await s.execute(select(NamespaceRow.name).order_by(NamespaceRow.name))).scalars())

    async def list_buckets(self, namespace: str) -> list[Bucket]:
        """Every bucket of the namespace, newest first (page after page)."""
        return await _every(lambda cursor: self.buckets(ListBuckets(namespace=namespace, cursor=cursor)))

    async def list_files(self, namespace: str, bucket: str) -> list[RunFile]:
        """Every run of the bucket, newest first (page after page)."""
        return await _every(lambda cursor: self.files(ListFiles(namespace=namespace, bucket=bucket, cursor=cursor)))

    async def list_versions(self, namespace: str, bucket: str, file: str) -> list[Version]:
        """Every version of the run, in the order they were taken (page after page)."""

        def page(cursor: str | None) -> Awaitable[Versions]:
            q = ListVersions(namespace=namespace, bucket=bucket, file=file, cursor=cursor, order="oldest")
            return self.versions(q)

        return await _every(page)

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
        return Resolved(url=url, version=version, members=members, metrics=row.run.metrics or {})

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
        """A run's whole lineage: its initial version, then every step in the order they started (page after page)."""
        first = page = await self.lineage_page(GetLineage(namespace=namespace, bucket=bucket, file=file))
        steps = list(page.steps)
        while page.next is not None:
            page = await self.lineage_page(GetLineage(namespace=namespace, bucket=bucket, file=file, cursor=page.next))
            steps += page.steps
        return first.model_copy(update={"steps": tuple(steps), "next": None})

    async def lineage_page(self, q: GetLineage, *, budget: int | None = None) -> Lineage:
        """A run's initial version, then a page of its steps in the order they started, with their versions."""
        cursor = _cursor(q.cursor, "oldest")
        async with self.db.reading() as s:
            run = await self._run(s, q.namespace, q.bucket, q.file)
            # the database orders the run's steps and cuts the page: only the page's rows come back
            query = _LINEAGE.select(
                select(StepRow, *_LINEAGE.columns).where(StepRow.file_id == run.id), "oldest", cursor, q.limit
            )
            window = [(tuple(key), st) for st, *key in (await s.execute(query)).all()]
            step_ids = sorted({st.step_id for _, st in window} | {""})
            versions = await s.execute(
                select(VersionRow).where(VersionRow.file_id == run.id, VersionRow.step_key.in_(step_ids))
            )
            by_key = {(v.step_key, v.attempt, v.phase): views.version(v) for v in versions.scalars()}
            count = await _count(s, VersionRow, VersionRow.file_id == run.id)
        steps = [(k, views.step(st, by_key)) for k, st in window]
        initial = next((v for k, v in by_key.items() if k[2] == "initial"), None)
        room = (budget or paging.DEFAULT_BUDGET) - (paging.json_size(initial) if initial else 0)
        page = paging.fill(
            steps,
            key=lambda keyed_step: keyed_step[0],
            size=lambda keyed_step: paging.json_size(keyed_step[1]),
            order="oldest",
            cursor=cursor,
            limit=q.limit,
            budget=room - paging.json_size(views.run_file(run, count)),
            what="a step with its versions",
        )
        return Lineage(
            file=views.run_file(run, count),
            initial=initial,
            steps=tuple(step for _, step in page.rows),
            next=page.next,
            prev=page.prev,
        )

    async def search(self, namespace: str, text: str, *, limit: int = 50, budget: int | None = None) -> list[SearchHit]:
        """Buckets, runs and versions whose name, experiment, run, pipeline or id contains ``text``, or a URL.

        At most ``limit`` hits, and no more than fit in ``budget`` bytes.
        """
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
        return paging.within(hits[:limit], budget)

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
        """The run a URL names by its bucket and file name (one query; a second only to say which is missing)."""
        in_bucket = (
            select(BucketRow.id)
            .join(NamespaceRow, BucketRow.namespace_id == NamespaceRow.id)
            .where(NamespaceRow.name == namespace, BucketRow.name == bucket)
            .scalar_subquery()
        )
        row = (
            await s.execute(select(RunRow).where(RunRow.bucket_id == in_bucket, RunRow.name == name))
        ).scalar_one_or_none()
        if row is None:
            await self._bucket(s, namespace, bucket)  # NotFound if it is the bucket that is missing
            raise NotFound(f"no run {name!r} in bucket {bucket!r} of namespace {namespace!r}")
        return row

    async def _version_at(self, s: AsyncSession, namespace: str, url: str) -> VersionRow:
        where = parse_url_in(namespace, url)
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
        where = parse_url_in(namespace, url)
        if where.version is not None:
            return views.version_hit(await self._in_session(lambda s: self._version_at(s, namespace, url)))
        if where.file is not None:
            return views.file_hit(await self._in_session(lambda s: self._run(s, namespace, where.bucket, where.file)))
        return views.bucket_hit(await self._in_session(lambda s: self._bucket(s, namespace, where.bucket)))

    async def _in_session(self, lookup: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async with self.db.reading() as s:
            return await lookup(s)


_BUCKETS = paging.Keyset((BucketRow.created_at, BucketRow.id))
_FILES = paging.Keyset((RunRow.started_at, RunRow.id))
_VERSIONS = paging.Keyset((func.coalesce(VersionRow.taken_at, VersionRow.created_at), VersionRow.id))
# A step's place in its run's lineage: when it began (its start, else its before-snapshot's time, else its end),
# ties broken by its before-snapshot's time (workflow times have whole seconds), then its id. The before-snapshot's
# time is looked up step by step through the versions' unique key, a plan that stays fast before the database has
# statistics of the tables (a join planned for empty tables scanned every before-version once per step).
_BEFORE = aliased(VersionRow, name="before")
_BEFORE_TAKEN = (
    select(_BEFORE.taken_at)
    .where(
        _BEFORE.file_id == StepRow.file_id,
        _BEFORE.step_key == StepRow.step_id,
        _BEFORE.attempt == StepRow.attempt,
        _BEFORE.phase == "before",
    )
    .scalar_subquery()
)
_LATER = literal(views.LATER, UtcDateTime())
_LINEAGE = paging.Keyset(
    (
        func.coalesce(StepRow.started_at, _BEFORE_TAKEN, StepRow.finished_at, _LATER),
        func.coalesce(_BEFORE_TAKEN, _LATER),
        StepRow.step_id,
        StepRow.attempt,
    )
)


def _cursor(text: str | None, order: Order) -> paging.Cursor | None:
    return paging.Cursor.decode(text, order) if text else None


def _fill(
    rows: list[tuple[Any, M]],
    key: Callable[[Any], tuple[Any, ...]],
    q: PageQuery,
    cursor: paging.Cursor | None,
    budget: int | None,
    what: str,
) -> paging.Filled[tuple[Any, M]]:
    """The page of (row, result) pairs; the row gives the sort key, the result its size."""
    return paging.fill(
        rows,
        key=lambda pair: key(pair[0]),
        size=lambda pair: paging.json_size(pair[1]),
        order=q.order,
        cursor=cursor,
        limit=q.limit,
        budget=budget,
        what=what,
    )


async def _count(s: AsyncSession, table: type[Any], *where: Any) -> int:
    return int(await s.scalar(select(func.count()).select_from(table).where(*where)) or 0)


async def _counts(s: AsyncSession, column: Any, ids: list[int]) -> dict[int, int]:
    """How many rows of ``column``'s table point at each of ``ids`` (runs per bucket, versions per run)."""
    if not ids:
        return {}
    rows = await s.execute(select(column, func.count()).where(column.in_(ids)).group_by(column))
    return {k: n for k, n in rows.all()}


async def _every(page: Callable[[str | None], Awaitable[Any]]) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        result = await page(cursor)
        items += result.items
        if result.next is None:
            return items
        cursor = result.next
