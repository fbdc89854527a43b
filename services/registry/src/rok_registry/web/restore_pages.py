"""The restore forms and the version picker: what a person fills in to get a version back in a cluster.

- ``/restore/notebook?url=URL`` — "restore as a new notebook server": its name, the image (the one of the
  notebook server the run came from, recorded when it started), which volumes, each as a new PVC with its size
  (the original claim's, or the data's with headroom), and a storage class;
- ``/restore/pvc?url=URL`` — "restore one volume as a PVC": the volume, the PVC's name, size, access mode and
  storage class;
- ``/pick?kind=notebook|pvc`` — the version picker: search across buckets, runs and steps (``q``), or walk a
  bucket's runs and a run's steps with their before- and after-versions; choosing one fills the form (in the
  window that opened the picker, or by following the link).

The forms post to the API's restore endpoint (``POST /api/v1/restores``, :mod:`rok_registry.restore_api`) and
follow the restore by its id. Every page reads the version first, so only a caller who may READ its namespace
sees anything of it; the endpoint checks the right to create the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from rokcommon.errors import NotFound, RokError
from rokcommon.notebooks import NotebookServer, suggested_size
from rokcommon.registry_contract import Member, Version
from rokcommon.urls import InvalidUrl, format_url, parse_url

from rok_registry.web.access import registry

Kind = Literal["notebook", "pvc"]
PICKED = 50  # buckets, runs or hits the picker lists


def routes(page: Any, error_page: Any) -> APIRouter:
    """The pages, rendered with the browser's ``page`` and ``error_page`` (so they share its header and switcher)."""
    router = APIRouter()

    @router.get("/restore/notebook", response_class=HTMLResponse)
    async def notebook_form(request: Request, url: str = "", queries: Any = Depends(registry)) -> Response:
        if not url:
            return page(request, "pick.html", **await _picking(queries, request, "notebook"))
        try:
            resolved = await queries.resolve(_version_url(url))
        except (RokError, InvalidUrl) as error:
            return error_page(request, error)
        original = resolved.version.notebook
        return page(
            request,
            "restore_notebook.html",
            version=resolved.version,
            url=resolved.url,
            original=original,
            suggested=_suggested_name(original, resolved.version),
            volumes=[_volume_row(m, original) for m in resolved.members],
        )

    @router.get("/restore/pvc", response_class=HTMLResponse)
    async def pvc_form(request: Request, url: str = "", queries: Any = Depends(registry)) -> Response:
        if not url:
            return page(request, "pick.html", **await _picking(queries, request, "pvc"))
        try:
            parsed = parse_url(url)
            resolved = await queries.resolve(_version_url(url))
        except (RokError, InvalidUrl) as error:
            return error_page(request, error)
        original = resolved.version.notebook
        rows = [_volume_row(m, original) for m in resolved.members]
        chosen = parsed.volume or (rows[0].name if rows else None)
        return page(
            request,
            "restore_pvc.html",
            version=resolved.version,
            url=resolved.url,
            volumes=rows,
            chosen=chosen,
        )

    @router.get("/pick", response_class=HTMLResponse)
    async def picker(request: Request, kind: Kind = "notebook", queries: Any = Depends(registry)) -> Response:
        try:
            return page(request, "pick.html", **await _picking(queries, request, kind))
        except RokError as error:
            return error_page(request, error)

    return router


@dataclass(frozen=True)
class VolumeRow:
    """One volume of a version as a form offers it."""

    name: str
    role: str
    bytes: int
    size: str  # the suggested size of its new PVC
    mount_path: str | None
    access_mode: str | None
    storage_class: str | None


def _volume_row(member: Member, original: NotebookServer | None) -> VolumeRow:
    claim = original.volume(member.volume) if original else None
    return VolumeRow(
        name=member.volume,
        role=member.role,
        bytes=member.size,
        size=suggested_size(member.size, claim),
        mount_path=claim.mount_path if claim else None,
        access_mode=claim.access_modes[0] if claim and claim.access_modes else None,
        storage_class=claim.storage_class if claim else None,
    )


def _version_url(url: str) -> str:
    """The version's URL without ``&volume=``: a form offers every volume of it."""
    parsed = parse_url(url)
    if parsed.version is None:
        raise InvalidUrl(f"{url} names no version: pick a version (?version=…) to restore")
    return format_url(parsed.namespace, parsed.bucket, parsed.file, parsed.version)


def _suggested_name(original: NotebookServer | None, version: Version) -> str:
    base = original.name if original else (version.step_name or "notebook")
    return f"{base}-{version.id}"[:53].strip("-").lower()


async def _picking(queries: Any, request: Request, kind: Kind) -> dict[str, Any]:
    """What the picker shows: search hits, a bucket's runs, a run's versions step by step, or the buckets."""
    params = request.query_params
    text = (params.get("q") or "").strip()
    bucket, file = params.get("bucket"), params.get("file")
    shown: dict[str, Any] = {"kind": kind, "q": text, "bucket": bucket, "file": file, "query": ""}
    if text:
        shown["hits"] = list(await queries.search(text))[:PICKED]
    elif bucket and file:
        lineage = await queries.lineage(bucket, file)
        shown["choices"] = _choices(lineage)
    elif bucket:
        shown["runs"] = (await queries.files_page(bucket, limit=PICKED)).items
    else:
        shown["buckets"] = (await queries.buckets_page(limit=PICKED)).items
    return shown


@dataclass(frozen=True)
class Choice:
    """A version the picker offers: what it is in the run, and its URL."""

    label: str
    version: Version


def _choices(lineage: Any) -> list[Choice]:
    found = []
    if lineage.initial is not None:
        found.append(Choice("initial: the notebook's volumes when the run started", lineage.initial))
    for step in lineage.steps:
        name = step.name or step.step_id
        for phase, version in (("before", step.before), ("after", step.after)):
            if version is not None:
                found.append(Choice(f"{name}: {phase}", version))
    if not found:
        raise NotFound("this run has no version to restore yet")
    return found
