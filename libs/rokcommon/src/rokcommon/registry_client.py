"""Asking the registry over NATS request-reply: :class:`RegistryClient`, within one namespace.

The questions and answers are those of :mod:`rokcommon.registry_contract`; a typed error reply is raised as the
exception its kind names. Use::

    registry = RegistryClient(nc, "team-a")
    resolved = await registry.resolve("rok://team-a/exp-3mis2/train-3mis2-a1b2?version=k3x9q2mf7z")
    for member in resolved.members:  # workspace first
        print(member.volume, member.snapshot_id)

Lists come a page at a time (``files_page(bucket, limit=…, cursor=page.next)``); ``iter_files(bucket)`` follows
the pages as a loop goes, and ``list_files(bucket)`` reads them all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError

from rokcommon import payloads, subjects
from rokcommon.errors import InvalidRequest
from rokcommon.events import Model, Phase, invalid_event
from rokcommon.registry_contract import (
    DEFAULT_PAGE,
    MAX_PAGE,
    QUERIES,
    Bucket,
    Buckets,
    Files,
    Found,
    Lineage,
    Order,
    Reply,
    Resolved,
    RunFile,
    RunStatus,
    SearchHit,
    SearchHits,
    Version,
    Versions,
    VersionStatus,
    raise_error,
)
from rokcommon.urls import parse_url

tracer = trace.get_tracer("rokcommon.registry_client")

T = TypeVar("T", bound=Model)


class RegistryClient:
    """Ask the registry over NATS request-reply, within one namespace.

    Raises :class:`~rokcommon.errors.NotFound`, :class:`~rokcommon.errors.Forbidden` or
    :class:`~rokcommon.errors.InvalidRequest` (:class:`InvalidUrl` for a malformed URL, before asking), and
    :class:`~rokcommon.errors.TemporaryError` when no registry answers within ``timeout`` seconds or it cannot
    answer now (its database is down).
    """

    def __init__(self, nc: Client, namespace: str, *, timeout: float = 10.0) -> None:
        self.nc = nc
        self.namespace = namespace
        self.timeout = timeout

    # --- lists: one page, every item page by page, or all of them ------------------------------------------

    async def buckets_page(
        self, *, limit: int = DEFAULT_PAGE, cursor: str | None = None, order: Order = "newest"
    ) -> Buckets:
        return await self._ask("buckets", Buckets, limit=limit, cursor=cursor, order=order)

    async def files_page(
        self,
        bucket: str,
        *,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
        order: Order = "newest",
        status: RunStatus | None = None,
    ) -> Files:
        return await self._ask("files", Files, bucket=bucket, limit=limit, cursor=cursor, order=order, status=status)

    async def versions_page(
        self,
        bucket: str,
        file: str,
        *,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
        order: Order = "newest",
        step: str | None = None,
        status: VersionStatus | None = None,
    ) -> Versions:
        fields = {"limit": limit, "cursor": cursor, "order": order, "step": step, "status": status}
        return await self._ask("versions", Versions, bucket=bucket, file=file, **fields)

    def iter_buckets(self, *, order: Order = "newest") -> AsyncIterator[Bucket]:
        """Every bucket, asking for one page after another as the loop goes."""
        return _follow(lambda cursor: self.buckets_page(limit=MAX_PAGE, cursor=cursor, order=order))

    def iter_files(
        self, bucket: str, *, order: Order = "newest", status: RunStatus | None = None
    ) -> AsyncIterator[RunFile]:
        """Every run of ``bucket``, asking for one page after another as the loop goes."""
        return _follow(
            lambda cursor: self.files_page(bucket, limit=MAX_PAGE, cursor=cursor, order=order, status=status)
        )

    def iter_versions(
        self, bucket: str, file: str, *, order: Order = "oldest", step: str | None = None
    ) -> AsyncIterator[Version]:
        """Every version of a run (in the order they were taken), asking for one page after another."""
        return _follow(
            lambda cursor: self.versions_page(bucket, file, limit=MAX_PAGE, cursor=cursor, order=order, step=step)
        )

    async def list_buckets(self) -> list[Bucket]:
        """Every bucket, newest first (all pages)."""
        return [b async for b in self.iter_buckets()]

    async def list_files(self, bucket: str) -> list[RunFile]:
        """Every run of ``bucket``, newest first (all pages)."""
        return [f async for f in self.iter_files(bucket)]

    async def list_versions(self, bucket: str, file: str) -> list[Version]:
        """Every version of a run, in the order they were taken (all pages)."""
        return [v async for v in self.iter_versions(bucket, file)]

    async def get_version(self, url: str) -> Version:
        parse_url(url)
        return await self._ask("version", Version, url=url)

    async def resolve(self, url: str) -> Resolved:
        parse_url(url)
        return await self._ask("resolve", Resolved, url=url)

    async def lineage_page(
        self, bucket: str, file: str, *, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> Lineage:
        """A run's initial version and a page of its steps (``next``: the cursor of the steps that follow)."""
        return await self._ask("lineage", Lineage, bucket=bucket, file=file, limit=limit, cursor=cursor)

    async def lineage(self, bucket: str, file: str) -> Lineage:
        """A run's whole lineage: its initial version and every step (all pages)."""
        first = page = await self.lineage_page(bucket, file, limit=MAX_PAGE)
        steps = list(page.steps)
        while page.next is not None:
            page = await self.lineage_page(bucket, file, limit=MAX_PAGE, cursor=page.next)
            steps += page.steps
        return first.model_copy(update={"steps": tuple(steps), "next": None})

    async def find_version(
        self, workflow_uid: str, step_id: str | None, phase: Phase, *, attempt: int | None = None
    ) -> Version | None:
        found = await self._ask("find", Found, workflow_uid=workflow_uid, step_id=step_id, phase=phase, attempt=attempt)
        return found.version

    async def search(self, text: str, *, limit: int = 50) -> list[SearchHit]:
        return list((await self._ask("search", SearchHits, text=text, limit=limit)).items)

    async def _ask(self, name: str, result: type[T], **fields: Any) -> T:
        subject = subjects.registry_query(name)
        request_model = QUERIES[name][0]
        return await ask_registry(
            self.nc, subject, name, request_model, result, timeout=self.timeout, namespace=self.namespace, **fields
        )


async def ask_registry(
    nc: Client,
    subject: str,
    name: str,
    request_model: type[BaseModel],
    result: type[T],
    /,
    *,
    timeout: float,
    **fields: Any,
) -> T:
    """Send the registry the request ``name`` (``request_model`` of ``fields``) on ``subject`` and return its
    ``result``, or raise the typed error it answered; the queries and the retention requests both ask this way."""
    try:
        request = request_model(**fields)
    except ValidationError as error:  # asked wrongly (a 100 KB search): the asker's error, in one line
        raise InvalidRequest(str(invalid_event(request_model, error))) from None
    with tracer.start_as_current_span(
        f"{subject} request",
        kind=SpanKind.CLIENT,
        attributes={"messaging.system": "nats", "messaging.destination.name": subject},
    ):
        msg = await payloads.request(
            nc,
            subject,
            request.model_dump_json().encode(),
            timeout=timeout,
            nobody=f"no registry answers on {subject}: is rok-registry running (rok up)?",
            too_late=f"the registry did not answer {name} within {timeout:g}s",
        )
    reply = Reply.model_validate_json(msg.data)
    if reply.error is not None:
        raise_error(reply.error)
    return result.model_validate(reply.result or {})


P = TypeVar("P", Buckets, Files, Versions)


async def _follow(page: Callable[[str | None], Awaitable[P]]) -> AsyncIterator[Any]:
    """The items of one page after another, from the first until one has no ``next``."""
    cursor: str | None = None
    while True:
        result = await page(cursor)
        for item in result.items:
            yield item
        if result.next is None:
            return
        cursor = result.next
