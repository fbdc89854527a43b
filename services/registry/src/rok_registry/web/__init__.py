"""The snapshot browser: server-rendered pages the registry serves next to its API.

Buckets → files (runs) → versions (step, phase, tags, size, new bytes, a copy button for the URL); a run's
lineage (its steps in order, their before- and after-versions, and what each step changed, from the summaries
recorded with the snapshots); the full comparison of two versions (``/compare?a=URL&b=URL``, asked of the service
that holds the store); a search box for a bucket, a run or a URL; and a restore action that asks for a target
(a directory on one machine, a new PVC or notebook server in a cluster) and shows the restore's progress by polling
``/restores/<id>``. The registry's app includes :data:`router`.

Every page shows one namespace, chosen with the switcher in its header (the namespaces the caller may read), and
asks nothing of it before the caller's permission there is checked (:mod:`rok_registry.gate`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from rokcommon.authz import READ
from rokcommon.diffs import VolumeChanges, request_diff
from rokcommon.errors import Forbidden, InvalidRequest, NotFound, RokError, TemporaryError
from rokcommon.humanize import size, when
from rokcommon.registry_contract import Lineage, Order, Step
from rokcommon.urls import InvalidUrl, parse_url

from rok_registry import restore_api
from rok_registry.gate import authorize
from rok_registry.web import restore_pages
from rok_registry.web.access import (
    NAMESPACE_COOKIE,
    chosen_namespace,
    namespaces,
    page_namespace,
    registry,
    web_bus,
)
from rok_registry.web.changes import StepVolumeChanges, step_changes
from rok_registry.web.restores import RestoreForm

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
DIFF_LINES = 200  # paths the compare page lists per volume and kind; the rest is counted
PAGE = 50  # buckets, runs, versions or steps a page shows


templates.env.filters["size"] = size
templates.env.filters["when"] = when


async def _switcher(request: Request) -> None:
    """Every page's namespace, and the namespaces its switcher offers (those the caller may read).

    Without a choice a page shows the configured namespace if the caller may read it, else the first they may.
    """
    chosen = chosen_namespace(request)
    request.state.namespace = page_namespace(request)
    request.state.namespaces = [request.state.namespace]
    if request.method == "GET" and not request.url.path.startswith(("/static/", "/restores")):
        with contextlib.suppress(RokError):  # the switcher is a convenience: a page still answers without it
            offered = await namespaces(request)
            if chosen is None and offered and request.state.namespace not in offered:
                request.state.namespace = offered[0]
            request.state.namespaces = offered or [request.state.namespace]


router = APIRouter(include_in_schema=False, dependencies=[Depends(_switcher)])


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("query", "")
    namespace = request.state.namespace
    mode = request.app.state.gate.access.mode  # what a restore may go into: a directory, or a PVC or notebook
    shown = {"namespace": namespace, "namespaces": request.state.namespaces, "mode": mode, **context}
    response = templates.TemplateResponse(request, name, shown, status_code=status_code)
    if request.query_params.get("ns") == namespace:  # chosen with the switcher: remembered for the next pages
        response.set_cookie(NAMESPACE_COOKIE, namespace, httponly=True, samesite="strict", path="/")
    return response


def _error_page(request: Request, error: Exception) -> HTMLResponse:
    if isinstance(error, Forbidden):
        status, title = 403, "Not yours"
    elif isinstance(error, NotFound):
        status, title = 404, "Not found"
    elif isinstance(error, InvalidRequest):
        status, title = 400, "Not understood"
    elif isinstance(error, TemporaryError):
        status, title = 503, "The registry is not answering"
    else:
        status, title = 500, "Something went wrong"
    return _page(request, "error.html", status_code=status, title=title, message=str(error))


@router.get("/", response_class=HTMLResponse)
async def buckets_page(
    request: Request, cursor: str | None = None, order: Order = "newest", queries: Any = Depends(registry)
) -> Response:
    try:
        page = await queries.buckets_page(limit=PAGE, cursor=cursor, order=order)
    except RokError as error:
        return _error_page(request, error)
    return _page(request, "buckets.html", buckets=page.items, pager=Pager.of(request, page), order=order)


@router.get("/buckets/{bucket}", response_class=HTMLResponse)
async def files_page(
    request: Request,
    bucket: str,
    cursor: str | None = None,
    order: Order = "newest",
    status: str = "",
    queries: Any = Depends(registry),
) -> Response:
    try:
        page = await queries.files_page(bucket, limit=PAGE, cursor=cursor, order=order, status=_status_of(status))
    except (RokError, ValidationError) as error:
        return _error_page(request, _invalid(error))
    filters = {"order": order, "status": status}
    return _page(request, "files.html", bucket=bucket, files=page.items, pager=Pager.of(request, page), **filters)


@router.get("/buckets/{bucket}/{file}", response_class=HTMLResponse)
async def versions_page(
    request: Request,
    bucket: str,
    file: str,
    version: str | None = None,
    cursor: str | None = None,
    order: Order = "newest",
    status: str = "",
    step: str = "",
    queries: Any = Depends(registry),
) -> Response:
    try:
        page = await queries.versions_page(
            bucket, file, limit=PAGE, cursor=cursor, order=order, status=_status_of(status), step=step.strip() or None
        )
        run: Lineage = await queries.lineage_page(bucket, file, limit=1)  # the run itself: its metrics
    except (RokError, ValidationError) as error:
        return _error_page(request, _invalid(error))
    return _page(
        request,
        "versions.html",
        bucket=bucket,
        file=file,
        metrics=sorted(run.file.metrics.items()),
        versions=page.items,
        selected=version,
        pager=Pager.of(request, page),
        order=order,
        status=status,
        step=step,
    )


@router.get("/buckets/{bucket}/{file}/lineage", response_class=HTMLResponse)
async def lineage_page(
    request: Request, bucket: str, file: str, cursor: str | None = None, queries: Any = Depends(registry)
) -> Response:
    try:
        lineage: Lineage = await queries.lineage_page(bucket, file, limit=PAGE, cursor=cursor)
    except RokError as error:
        return _error_page(request, error)
    steps = [(step, _step_changes(step)) for step in lineage.steps]  # in the order they started, a page of them
    pager = Pager.of(request, lineage)
    return _page(request, "lineage.html", bucket=bucket, file=file, lineage=lineage, steps=steps, pager=pager)


@dataclass(frozen=True)
class Pager:
    """The links of a list page to the pages before and after it (its query string kept, its cursor replaced)."""

    prev: str | None
    next: str | None
    total: int | None

    @classmethod
    def of(cls, request: Request, page: Any) -> Pager:
        def link(cursor: str | None) -> str | None:
            if cursor is None:
                return None
            url = request.url.include_query_params(cursor=cursor)
            return f"{url.path}?{url.query}"

        return cls(link(page.prev), link(page.next), getattr(page, "total", None))


def _status_of(text: str) -> Any:
    """The status filter: empty for any."""
    return text.strip() or None


def _invalid(error: Exception) -> Exception:
    """A filter the list does not know (a pydantic error) as the registry's own invalid-request error."""
    if isinstance(error, ValidationError):
        fields = ", ".join(str(e["loc"][-1]) for e in error.errors())
        return InvalidRequest(f"not a filter of this list: {fields}")
    return error


def _step_changes(step: Step) -> list[StepVolumeChanges] | None:
    """What a step changed: its after-version's recorded summaries against its before-version, volume by volume."""
    if step.before is None or step.after is None or not step.before.members or not step.after.members:
        return None
    return step_changes(step.before.members, step.after.members)


@router.get("/compare", response_class=HTMLResponse)
async def compare_page(request: Request, a: str = "", b: str = "") -> Response:
    """Every path that differs between versions ``a`` and ``b``, volume by volume."""
    a, b = a.strip(), b.strip()
    if not a or not b:
        return _page(request, "compare.html", a=a, b=b, changes=None, limit=DIFF_LINES)
    try:
        parse_url(a)
        parse_url(b)
        namespace = request.state.namespace
        await authorize(request, namespace, READ)
        changes: list[VolumeChanges] = await request_diff(await web_bus(request).nc(), namespace, a, b)
    except RokError as error:
        return _error_page(request, error)
    return _page(request, "compare.html", a=a, b=b, changes=changes, limit=DIFF_LINES)


@router.get("/search", response_class=HTMLResponse)
async def search_page(request: Request, q: str = "", queries: Any = Depends(registry)) -> Response:
    text = q.strip()
    if not text:
        return RedirectResponse("/", status_code=303)
    if text.startswith("rok://"):
        try:
            url = parse_url(text)
        except InvalidUrl as error:
            return _error_page(request, error)
        in_namespace = f"ns={quote(url.namespace)}"
        if url.file is None:
            return RedirectResponse(f"/buckets/{quote(url.bucket)}?{in_namespace}", status_code=303)
        where = f"/buckets/{quote(url.bucket)}/{quote(url.file)}?{in_namespace}"
        if url.version:
            where += f"&version={quote(url.version)}#v-{quote(url.version)}"
        return RedirectResponse(where, status_code=303)
    try:
        hits = await queries.search(text)
    except RokError as error:
        return _error_page(request, error)
    return _page(request, "search.html", hits=hits, query=text)


@router.get("/steps", response_class=HTMLResponse)
async def step_version_page(
    request: Request, run: str = "", step: str = "", phase: str = "after", queries: Any = Depends(registry)
) -> Response:
    """The before- or after-version of step ``step`` of the KFP run ``run`` (its id): where the Markdown links of
    a compiled notebook's steps point (``rok compile``). They are written before the versions exist, and lead
    to the version once it is recorded."""
    if not run.strip() or not step.strip() or phase not in ("before", "after"):
        return _error_page(
            request, InvalidRequest("a step's page needs run=<KFP run id>, step=<name>, phase=before|after")
        )
    try:
        files = [hit for hit in await queries.search(run.strip()) if hit.kind == "file"]
        for hit in files:
            page = await queries.versions_page(hit.bucket, hit.file, limit=PAGE, step=step.strip())
            for found in page.items:
                if found.run_id == run.strip() and found.phase == phase:
                    where = f"/buckets/{quote(found.bucket)}/{quote(found.file)}?ns={quote(found.namespace)}"
                    return RedirectResponse(f"{where}&version={quote(found.id)}#v-{quote(found.id)}", status_code=303)
    except (RokError, ValidationError) as error:
        return _error_page(request, _invalid(error))
    return _error_page(
        request, NotFound(f"no {phase}-snapshot of step {step!r} of run {run} is recorded yet: it is, once committed")
    )


@router.post("/restores")
async def start_restore(request: Request, form: RestoreForm) -> JSONResponse:
    """Restore a version the caller may read into a target they may create (rok_registry.restore_api)."""
    body, status = await restore_api.start(request, form)
    return JSONResponse(body, status_code=status)


@router.get("/restores/{request_id}")
async def restore_progress(request: Request, request_id: str) -> JSONResponse:
    body, status = await restore_api.progress(request, request_id)
    return JSONResponse(body, status_code=status)


router.include_router(restore_pages.routes(_page, _error_page))  # the restore forms and the version picker


@router.get("/static/{name}")
async def static(name: str) -> Response:
    path = STATIC / name
    if "/" in name or not path.is_file():
        return Response(status_code=404)
    return FileResponse(path)


# The file browser's pages (rok_registry.web.browse), under the same namespace switcher as every page.
from rok_registry.web.browse import router as _browse_router  # noqa: E402

router.include_router(_browse_router)
