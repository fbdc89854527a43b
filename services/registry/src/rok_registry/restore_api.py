"""The restore endpoint of the HTTP API: how a person (or the ``rok`` CLI in a notebook) asks for a restore.

``POST /api/v1/restores`` takes one :class:`~rok_registry.web.restores.RestoreForm` as JSON — the version's
``url``, the target ``kind`` (``directory`` on one machine; ``pvc`` or ``notebook`` in a cluster), the target's
name (or directory), and for a PVC its ``size``, ``storage_class``, ``access_mode``, for a notebook server its
``image`` and per-volume ``sizes`` — and answers **202** with the restore's id and state. ``GET
/api/v1/restores/{id}`` follows it (``requested`` → ``running`` → ``completed`` | ``failed``, bytes done and
total, the volumes and where they went, the reason of a failure), for the user who asked only.

The web pages' ``POST /restores`` is the same endpoint under the pages' path. Both check what docs/security.md
says: READ in the version's namespace, and the right to create the target in its namespace; the restorer checks
both again for the user the request names.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from rokcommon.authz import READ
from rokcommon.errors import NotFound, RokError
from rokcommon.urls import parse_url

from rok_registry.answers import KIND_OF_STATUS, refusal
from rok_registry.gate import authorize, identity
from rok_registry.web.access import web_bus
from rok_registry.web.restores import RestoreForm, audit, authorized_target

router = APIRouter(prefix="/api/v1", tags=["restores"])


async def start(request: Request, form: RestoreForm) -> tuple[dict[str, object], int]:
    """Authorise ``form``, publish its restore request and answer (body, status); a refusal says why."""
    try:
        source = parse_url(form.url).namespace
        who = await authorize(request, source, READ)
        target = await authorized_target(request, form, source)
        volumes = tuple(v for v in form.volumes if v)
        watch = await web_bus(request).restore(form.url, target, volumes, namespace=source, requested_by=who.user)
    except RokError as error:
        return {"error": str(error)}, refusal(error)[0]
    audit(who, form.url, target, watch.request_id)
    return watch.to_dict(), 202


async def progress(request: Request, request_id: str) -> tuple[dict[str, object], int]:
    try:
        return await web_bus(request).follow(request_id, identity(request).user), 200
    except NotFound as error:
        return {"error": str(error)}, 404


def _api_answer(body: dict[str, object], status: int) -> JSONResponse:
    """The API's shape: errors as ``{"error": {"kind", "message"}}``, as every other API answer."""
    if "error" in body:
        kind = KIND_OF_STATUS.get(status, "invalid")
        return JSONResponse({"error": {"kind": kind, "message": body["error"]}}, status_code=status)
    return JSONResponse(body, status_code=status)


@router.post("/restores", status_code=202)
async def request_restore(request: Request, form: RestoreForm) -> JSONResponse:
    """Restore a version into a new PVC, a new notebook server, or (on one machine) a directory."""
    return _api_answer(*await start(request, form))


@router.get("/restores/{request_id}")
async def follow_restore(request: Request, request_id: str) -> JSONResponse:
    """The state of a restore the caller asked for."""
    return _api_answer(*await progress(request, request_id))
