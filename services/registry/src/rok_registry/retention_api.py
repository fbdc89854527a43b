"""Retention over HTTP: ``POST /api/v1/namespaces/{ns}/forget``, ``GET …/forgets`` (what was forgotten, when, by
whom, by which rules) and ``PUT`` / ``DELETE …/pins?url=``.

Each route reads its namespace (the API router's READ check) and then checks the permission of what it does
there: forgetting is :data:`~rokcommon.authz.FORGET` (as deleting a claim), pinning :data:`~rokcommon.authz.PIN`
(as patching one); a dry run only reads. Who asked is the identity the gate found, and it is what the forget
records.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from rokcommon.authz import FORGET, PIN
from rokcommon.events import Name
from rokcommon.registry_contract import Forget, ForgetLog, ForgetReport, KeepRules, Pinned

from rok_registry import gate as gates
from rok_registry.retention import Retention

API = "/api/v1/namespaces/{namespace}"


class ForgetBody(KeepRules):
    """What to forget: the rules of :class:`~rokcommon.registry_contract.KeepRules`, in one bucket or all."""

    bucket: Name | None = None
    dry_run: bool = False


def get_retention(request: Request) -> Retention:
    retention: Retention = request.app.state.retention
    return retention


def retention_router() -> APIRouter:
    router = APIRouter(prefix=API, tags=["retention"], dependencies=[Depends(gates.readable_namespace)])

    @router.post("/forget")
    async def forget(namespace: str, body: ForgetBody, request: Request) -> ForgetReport:
        """Forget the runs and versions no rule keeps (``dry_run``: only say which)."""
        who = gates.identity(request) if body.dry_run else await gates.authorize(request, namespace, FORGET)
        rules = KeepRules(**body.model_dump(include=set(KeepRules.model_fields)))
        q = Forget(namespace=namespace, bucket=body.bucket, rules=rules, dry_run=body.dry_run, requested_by=who.user)
        return await get_retention(request).forget(q, by=who.user)

    @router.get("/forgets")
    async def forgets(namespace: str, request: Request, limit: int = Query(50, ge=1, le=500)) -> ForgetLog:
        """The latest forgets in the namespace, newest first."""
        return await get_retention(request).forgets(namespace, limit=limit)

    @router.put("/pins")
    async def pin(namespace: str, request: Request, url: str = Query(..., max_length=2048)) -> Pinned:
        """Pin what ``url`` names (a bucket, a run or a version): no forget removes it."""
        who = await gates.authorize(request, namespace, PIN)
        return await get_retention(request).pin(namespace, url, pinned=True, by=who.user)

    @router.delete("/pins")
    async def unpin(namespace: str, request: Request, url: str = Query(..., max_length=2048)) -> Pinned:
        """Unpin what ``url`` names."""
        who = await gates.authorize(request, namespace, PIN)
        return await get_retention(request).pin(namespace, url, pinned=False, by=who.user)

    return router
