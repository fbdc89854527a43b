"""What a restore asked from the pages may write into, and the audit line every restore leaves.

The kinds of target follow the mode (``ROK_AUTH``):

- on one machine, a directory under one of the restore roots (``ROK_RESTORE_ROOTS``; default the home and the
  temporary directory), resolved with every symlink followed before the check, so a link cannot lead out of
  them (:func:`rokcommon.authz.inside_roots`); the request carries the resolved path;
- in a cluster, a new PVC (``create`` on ``persistentvolumeclaims`` in its namespace) or a new notebook server
  (``create`` on ``notebooks.kubeflow.org`` and on ``persistentvolumeclaims``, one per volume) — never a
  directory of the restorer's host.

The source is checked by the caller (READ in the version's namespace). The restorer checks all of it again for
the user the request names: the bus is not taken at its word.
"""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rokcommon.authz import RESTORE_INTO_NOTEBOOK, RESTORE_INTO_PVC, AccessSettings, Identity, inside_roots, require
from rokcommon.errors import InvalidRequest
from rokcommon.events import DirectoryTarget, NotebookTarget, PvcTarget, RestoreTarget

log = logging.getLogger(__name__)


class RestoreForm(BaseModel):
    """A restore asked from a page: the version's URL and where it goes."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)
    target: str = Field(min_length=1, max_length=4096)  # a directory; or the name of the new PVC or notebook server
    kind: Literal["directory", "pvc", "notebook"] = "directory"
    namespace: str | None = Field(None, max_length=63)  # of a new PVC or notebook server; default: the version's
    volumes: list[str] = Field(default_factory=list, max_length=64)
    # a new PVC: its size, storage class and access mode (default: the original claim's, never below the data)
    size: str | None = Field(None, max_length=32)
    storage_class: str | None = Field(None, max_length=253)
    access_mode: str | None = Field(None, max_length=32)
    run_id: str | None = Field(None, max_length=63)  # a run's clone (rok clone-pvc): the run that owns the PVC
    # a new notebook server: its image (default: the original's) and each volume's new PVC size
    image: str | None = Field(None, max_length=512)
    sizes: dict[str, str] = Field(default_factory=dict, max_length=64)


async def authorized_target(request: Request, form: RestoreForm, source_namespace: str) -> RestoreTarget:
    """The target of ``form`` if the mode allows its kind and the caller may create it; else a refusal."""
    gate = request.app.state.gate
    who: Identity = request.state.identity
    name = form.target.strip()
    if gate.access.mode == "local":
        if form.kind != "directory":
            raise InvalidRequest(f"on this machine restores go into a directory, not a {form.kind}")
        return DirectoryTarget(path=str(inside_roots(name, _settings(request).roots)))
    if form.kind == "directory":
        raise InvalidRequest(
            "in a cluster a restore goes into a new PVC or a new notebook server (kind 'pvc' or 'notebook'), "
            "never into a directory of the restorer's host"
        )
    namespace = form.namespace or source_namespace
    target = kubernetes_target(form, namespace)
    await require(gate.access, who, namespace, RESTORE_INTO_PVC)
    if isinstance(target, NotebookTarget):
        await require(gate.access, who, namespace, RESTORE_INTO_NOTEBOOK)
    return target


def kubernetes_target(form: RestoreForm, namespace: str) -> PvcTarget | NotebookTarget:
    """The PVC or notebook server ``form`` asks for, in ``namespace``; a malformed field is one clear refusal."""
    blank = {k: v.strip() or None for k, v in {"storage_class": form.storage_class, "image": form.image}.items() if v}
    try:
        if form.kind == "pvc":
            if form.sizes:
                raise InvalidRequest("a PVC target takes one size (size), not sizes per volume")
            return PvcTarget(
                namespace=namespace,
                name=form.target.strip(),
                size=(form.size or "").strip() or None,
                access_mode=(form.access_mode or "").strip() or None,
                storage_class=blank.get("storage_class"),
                run_id=(form.run_id or "").strip() or None,
            )
        if form.size or form.access_mode or form.run_id:
            raise InvalidRequest("a notebook server takes a size per volume (sizes), not size, access_mode or run_id")
        return NotebookTarget(
            namespace=namespace,
            name=form.target.strip(),
            image=blank.get("image"),
            storage_class=blank.get("storage_class"),
            sizes={k: v.strip() for k, v in form.sizes.items() if v.strip()},
        )
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        raise InvalidRequest(f"{where}: {message}" if where and where not in message else message) from None


def audit(who: Identity, url: str, target: RestoreTarget, request_id: str) -> None:
    """One structured line per restore: who asked, from which version, into what (the line carries when)."""
    into = target.path if isinstance(target, DirectoryTarget) else f"{target.kind}:{target.namespace}/{target.name}"
    log.info(
        "restore requested by %s: %s into %s",
        who.user,
        url,
        into,
        extra={"audit": "restore", "user": who.user, "source": url, "target": into, "request_id": request_id},
    )


def _settings(request: Request) -> AccessSettings:
    settings = getattr(request.app.state, "settings", None)
    return settings if isinstance(settings, AccessSettings) else AccessSettings()
