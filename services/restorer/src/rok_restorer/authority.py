"""Whether a restore request from the bus may be carried out, judged again here: the bus is not taken at its word.

Whoever may publish ``rok.restore.requested.v1`` (the registry's pages and API, the CLI, the local runner) could
name any namespace in a request; the restorer can create PVCs everywhere. So before anything is resolved or
written, a request must hold up on its own:

- its URL names the namespace the request claims (the registry then resolves it in that namespace only);
- in a cluster: it names the user who asked (``requested_by``), who may READ the version's namespace and may
  create what the target makes in the target's namespace (a PVC; a notebook server and its PVCs), each checked
  by a SubjectAccessReview for that user (:mod:`rokcommon.authz`); a directory of the restorer's host is never a
  target there;
- on one machine: a directory target lies under the restore roots, no symlink leading out of them.

A request that does not is :class:`Unauthorised`, a permanent error: the consumer reports it as the request's
failure and the message goes to the dead-letter stream with the reason.
"""

from __future__ import annotations

from pathlib import Path

from rokcommon.authz import READ, RESTORE_INTO_NOTEBOOK, RESTORE_INTO_PVC, Access, Identity, inside_roots, require
from rokcommon.errors import Forbidden, InvalidRequest, PermanentError
from rokcommon.events import DirectoryTarget, NotebookTarget, RestoreRequested
from rokcommon.urls import InvalidUrl, parse_url


class Unauthorised(PermanentError):
    """A restore request whose sender may not have what it asks for; never retried."""


class Authority:
    """Checks each request with ``access`` (the mode's) and, on one machine, against the restore ``roots``."""

    def __init__(self, access: Access, roots: tuple[Path, ...]) -> None:
        self.access = access
        self.roots = roots

    async def check(self, request: RestoreRequested) -> None:
        """Return if ``request`` may be carried out; else raise :class:`Unauthorised` saying why."""
        try:
            await self._check(request)
        except (Forbidden, InvalidRequest) as error:
            raise Unauthorised(f"restore {request.request_id} refused: {error}") from error

    async def check_read(self, namespace: str, url: str, requested_by: str) -> None:
        """Return if ``requested_by`` may look inside ``url`` within ``namespace`` (a browse request): the URL
        names that namespace, and in a cluster the user who asked may READ it, as for a restore of the version.
        Else raise :class:`~rokcommon.errors.Forbidden` saying why."""
        try:
            source = parse_url(url).namespace
        except InvalidUrl as error:
            raise InvalidRequest(str(error)) from None
        if source != namespace:
            raise Forbidden(f"{url} is in namespace {source!r}, not in {namespace!r} as the request says")
        if self.access.mode == "local":
            return
        if not requested_by:
            raise Forbidden("the request names nobody who asked for it (requested_by)")
        await require(self.access, Identity(requested_by), source, READ)

    async def _check(self, request: RestoreRequested) -> None:
        try:
            source = parse_url(request.url).namespace
        except InvalidUrl:
            return  # nothing can be restored from it: the restorer refuses it as invalid, naming the URL
        if source != request.namespace:
            raise Forbidden(
                f"{request.url} is in namespace {source!r}, not in {request.namespace!r} as the request says"
            )
        target = request.target
        if self.access.mode == "local":
            if isinstance(target, DirectoryTarget):
                inside_roots(target.path, self.roots)
            return
        if not request.requested_by:
            raise Forbidden("the request names nobody who asked for it (requested_by)")
        who = Identity(request.requested_by)
        await require(self.access, who, source, READ)
        if isinstance(target, DirectoryTarget):
            raise Forbidden("in a cluster a restore goes into a new PVC or notebook server, never a host directory")
        await require(self.access, who, target.namespace, RESTORE_INTO_PVC)
        if isinstance(target, NotebookTarget):
            await require(self.access, who, target.namespace, RESTORE_INTO_NOTEBOOK)
