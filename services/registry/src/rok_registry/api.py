"""The registry over HTTP: a FastAPI app with the JSON API under ``/api/v1/namespaces/{ns}/...``.

The same query layer answers as on NATS, lists in the same pages (``?limit=&cursor=&order=``, and filters),
and errors have the same typed body
(``{"error": {"kind": "not_found" | "forbidden" | "invalid" | "unavailable", "message": …}}`` with 404, 403, 400
or 503).

The web pages (``rok_registry.web``, when that module exists) are included from its ``router``. They reach
what they need through ``request.app.state``: ``queries`` (:class:`~rok_registry.queries.Queries`),
``publish`` (an async callable taking an event, e.g. ``RestoreRequested``; None when not on a bus),
``nats`` (a callable returning the service's NATS connection, or None) and ``settings``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from rokcommon.authz import START_RUN
from rokcommon.events import Event, Phase
from rokcommon.health import PROBE_PATHS, Health
from rokcommon.registry_contract import (
    CURSOR_LENGTH,
    DEFAULT_PAGE,
    MAX_PAGE,
    Bucket,
    Buckets,
    Files,
    GetLineage,
    Lineage,
    ListBuckets,
    ListFiles,
    ListVersions,
    Order,
    Resolved,
    RunStatus,
    SearchHit,
    Version,
    Versions,
    VersionStatus,
)
from rokcommon.urls import format_url

from rok_registry import gate as gates
from rok_registry.answers import REFUSALS
from rok_registry.api_docs import add_api_docs
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder

log = logging.getLogger(__name__)

API = "/api/v1/namespaces/{namespace}"


def get_queries(request: Request) -> Queries:
    """The query layer of the app serving ``request`` (for routers such as the web pages)."""
    queries: Queries = request.app.state.queries
    return queries


def page_params(
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="items on the page, at most"),
    cursor: str | None = Query(None, max_length=CURSOR_LENGTH, description="a page's next or prev cursor"),
    order: Order = Query("newest", description="newest or oldest first"),
) -> dict[str, Any]:
    """The query parameters of a page of a list: ``?limit=&cursor=&order=``."""
    return {"limit": limit, "cursor": cursor, "order": order}


def api_router() -> APIRouter:
    # every route reads its namespace: the caller must hold READ there (rok_registry.gate)
    router = APIRouter(prefix=API, tags=["registry"], dependencies=[Depends(gates.readable_namespace)])

    @router.get("/buckets", response_model=Buckets)
    async def list_buckets(namespace: str, request: Request, page: dict[str, Any] = Depends(page_params)) -> Response:
        return _page(await get_queries(request).buckets(ListBuckets(namespace=namespace, **page)))

    @router.get("/buckets/{bucket}/files", response_model=Files)
    async def list_files(
        namespace: str,
        bucket: str,
        request: Request,
        page: dict[str, Any] = Depends(page_params),
        status: RunStatus | None = None,
    ) -> Response:
        q = ListFiles(namespace=namespace, bucket=bucket, status=status, **page)
        return _page(await get_queries(request).files(q))

    @router.get("/buckets/{bucket}/files/{file}/versions", response_model=Versions)
    async def list_versions(
        namespace: str,
        bucket: str,
        file: str,
        request: Request,
        page: dict[str, Any] = Depends(page_params),
        step: str | None = Query(None, max_length=253),
        status: VersionStatus | None = None,
    ) -> Response:
        q = ListVersions(namespace=namespace, bucket=bucket, file=file, step=step, status=status, **page)
        return _page(await get_queries(request).versions(q))

    @router.get("/buckets/{bucket}/files/{file}/versions/{version}")
    async def get_version(namespace: str, bucket: str, file: str, version: str, request: Request) -> Version:
        return await get_queries(request).get_version(namespace, format_url(namespace, bucket, file, version))

    @router.get("/buckets/{bucket}/files/{file}/lineage", response_model=Lineage)
    async def lineage(
        namespace: str,
        bucket: str,
        file: str,
        request: Request,
        limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
        cursor: str | None = Query(None, max_length=CURSOR_LENGTH),
    ) -> Response:
        q = GetLineage(namespace=namespace, bucket=bucket, file=file, limit=limit, cursor=cursor)
        return _page(await get_queries(request).lineage_page(q))

    @router.get("/version")
    async def version_at(namespace: str, request: Request, url: str = Query(...)) -> Version:
        return await get_queries(request).get_version(namespace, url)

    @router.get("/resolve")
    async def resolve(namespace: str, request: Request, url: str = Query(...)) -> Resolved:
        return await get_queries(request).resolve(namespace, url)

    @router.get("/find")
    async def find(
        namespace: str,
        request: Request,
        workflow_uid: str = Query(...),
        phase: Phase = Query(...),
        step_id: str | None = None,
        attempt: int | None = None,
    ) -> Version | None:
        return await get_queries(request).find_version(namespace, workflow_uid, step_id, phase, attempt=attempt)

    @router.get("/search")
    async def search(
        namespace: str, request: Request, q: str = Query(..., min_length=1), limit: int = Query(50, ge=1, le=500)
    ) -> list[SearchHit]:
        return await get_queries(request).search(namespace, q, limit=limit)

    return router


def bucket_router() -> APIRouter:
    """``PUT …/buckets?experiment=NAME``: the experiment's bucket, named now if it has none yet (``rok submit``
    asks before it starts a run in KFP, and names the KFP experiment and the run with the bucket's name and
    suffix). Idempotent. A bucket that exists is read (READ); naming a new one takes the right to start a run in
    the namespace (:data:`~rokcommon.authz.START_RUN`). An experiment named as a bucket (``churn-ab3cd``) is that
    bucket."""
    router = APIRouter(prefix=API, tags=["registry"], dependencies=[Depends(gates.readable_namespace)])

    @router.put("/buckets")
    async def experiment_bucket(
        namespace: str,
        request: Request,
        experiment: str = Query(..., min_length=1, max_length=512, description="the KFP experiment's name"),
    ) -> Bucket:
        found = await get_queries(request).experiment_bucket(namespace, experiment)
        if found is not None:
            return found
        await gates.authorize(request, namespace, START_RUN)
        recorder: Recorder = request.app.state.recorder
        return await recorder.experiment_bucket(namespace, experiment)

    return router


def _page(page: BaseModel) -> Response:
    """A page as JSON, serialised once: the page is the declared response model already (built and checked by the
    queries), so FastAPI's second validation pass — four times the cost of the dump on a lineage page — is skipped."""
    return Response(page.model_dump_json(), media_type="application/json")


def create_app(
    queries: Queries,
    *,
    publish: Callable[[Event], Awaitable[Any]] | None = None,
    nats: Callable[[], Any] | None = None,
    settings: Any = None,
    health: Health | None = None,
    gate: gates.Gate | None = None,
    retention: Any = None,
    recorder: Recorder | None = None,
) -> FastAPI:
    """The registry's HTTP app: the JSON API, health, and the web pages if ``rok_registry.web`` exists.

    ``/livez`` and ``/readyz`` report ``health``'s checks (:mod:`rokcommon.health`: NATS, the consumers, the
    database); ``/healthz`` answers as long as the process serves HTTP. ``gate`` identifies callers
    (:mod:`rok_registry.gate`); without one, only health and static files answer. ``retention``
    (:class:`~rok_registry.retention.Retention`) serves forget and pins (:mod:`rok_registry.retention_api`);
    ``recorder`` names an experiment's bucket on demand (:func:`bucket_router`).
    """
    # FastAPI's docs pages load their scripts from a CDN; ours are served from the package (rok_registry.api_docs)
    app = FastAPI(
        title="rok registry",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        telemetry={"exclude": _is_probe},  # FastAPI traces every request; a probe's would flood the traces
    )
    add_api_docs(app, openapi_url="/api/openapi.json")
    app.state.queries = queries
    app.state.publish = publish
    app.state.nats = nats
    app.state.settings = settings
    gates.install(app, gate or gates.locked())

    for error_type, (status, kind) in REFUSALS.items():
        app.add_exception_handler(error_type, _error_handler(status, kind))
    app.add_exception_handler(Exception, _unexpected)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if health is not None:
        probes = health

        @app.get("/livez", include_in_schema=False)
        async def livez() -> JSONResponse:
            report = await probes.live()
            return JSONResponse(report.body(), status_code=report.status_code)

        @app.get("/readyz", include_in_schema=False)
        async def readyz() -> JSONResponse:
            report = await probes.ready()
            return JSONResponse(report.body(), status_code=report.status_code)

    app.include_router(api_router())
    app.include_router(_restore_router())
    if recorder is not None:
        app.state.recorder = recorder
        app.include_router(bucket_router())
    if retention is not None:
        from rok_registry.retention_api import retention_router

        app.state.retention = retention
        app.include_router(retention_router())
    web = _web_router()
    if web is not None:
        app.include_router(web)
    return app


def _is_probe(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in PROBE_PATHS


def _error_handler(status: int, kind: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(_request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": {"kind": kind, "message": str(error)}}, status_code=status)

    return handle


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    """A failure nobody foresaw: the reason goes to the log, the caller learns only that it happened."""
    log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=error)
    body = {"error": {"kind": "internal", "message": "the registry could not answer; its log says why"}}
    return JSONResponse(body, status_code=500)


def _restore_router() -> APIRouter:
    from rok_registry.restore_api import router  # it builds on the web pages' bus connection

    return router


def _web_router() -> APIRouter | None:
    try:
        module = importlib.import_module("rok_registry.web")
    except ModuleNotFoundError as error:
        if error.name == "rok_registry.web":
            return None
        raise
    return getattr(module, "router", None)
