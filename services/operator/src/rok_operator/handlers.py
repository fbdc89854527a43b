"""kopf's handlers for `RokCluster`: reconcile on create, on a change of spec, on the operator's start and every
``ROK_RESYNC_SECONDS`` (which restores a deleted or edited child); tear down behind a finalizer on delete.

Status: ``conditions`` (``Ready``, ``Progressing``, ``Degraded``, each with a reason and a message),
``observedGeneration`` and ``components`` (per workload, desired and ready). A temporary failure (a missing Secret,
an unreachable store or API) is retried with a growing delay (``kopf.TemporaryError``); an invalid spec is not
retried until the spec changes (``kopf.PermanentError``). Neither stops the operator.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import kopf
from rokcommon.kube import api_client

from rok_operator.kube import Kube
from rok_operator.reconciler import Components, Degraded, reconcile, teardown
from rok_operator.settings import OperatorSettings
from rok_operator.spec import GROUP, PLURAL, VERSION

FINALIZER = f"{GROUP}/finalizer"
MAX_DELAY = 300.0

settings = OperatorSettings()
_kube: Kube | None = None


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube(api_client(settings.kube, settings.kubeconfig, needed_by="the rok operator"))
    return _kube


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.peering.standalone = True  # one replica, with the Deployment's Recreate strategy
    settings.scanning.disabled = True  # the CRD is installed with the operator: no CRD/namespace watches
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = False  # the RokCluster's conditions say what went wrong; the log says the rest
    settings.execution.max_workers = 4


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """The same credentials as the operator's own calls (``ROK_KUBE``), from the same client configuration."""
    configuration = kube().api_client.configuration
    keys = configuration.api_key or {}
    header = str(keys.get("BearerToken") or keys.get("authorization") or "")
    scheme, _space, token = header.rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or ("Bearer" if token else None),
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def _condition(type_: str, ok: bool, reason: str, message: str, now: str) -> dict[str, str]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }


def _conditions(*, degraded: Degraded | None, components: Components | None) -> list[dict[str, str]]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if degraded is not None:
        return [
            _condition("Ready", False, degraded.reason, degraded.message, now),
            _condition("Progressing", False, degraded.reason, "waiting for the problem to be fixed", now),
            _condition("Degraded", True, degraded.reason, degraded.message, now),
        ]
    assert components is not None
    waiting = components.waiting()
    return [
        _condition("Ready", not waiting, "AllReady" if not waiting else "RollingOut", ", ".join(waiting) or "", now),
        _condition("Progressing", bool(waiting), "RollingOut" if waiting else "Done", ", ".join(waiting), now),
        _condition("Degraded", False, "AsSpecified", "", now),
    ]


_locks: dict[str, asyncio.Lock] = {}


async def _reconcile(name: str, uid: str, patch: kopf.Patch, retry: int) -> None:
    """One reconciliation at a time per RokCluster, from its spec as the API server has it now: a timer tick that
    started before a change of spec never applies the old one after the new."""
    async with _locks.setdefault(uid, asyncio.Lock()):
        current = await kube().read_cluster(name)
        if current is None or current["metadata"].get("deletionTimestamp"):
            return
        generation = current["metadata"].get("generation")
        try:
            components = await reconcile(kube(), name, uid, current.get("spec") or {})
        except Degraded as degraded:
            patch.status["conditions"] = _conditions(degraded=degraded, components=None)
            patch.status["observedGeneration"] = generation
            if degraded.temporary:
                raise kopf.TemporaryError(str(degraded), delay=min(MAX_DELAY, 5.0 * 2**retry)) from None
            raise kopf.PermanentError(str(degraded)) from None
        patch.status["conditions"] = _conditions(degraded=None, components=components)
        patch.status["components"] = components.counts
        patch.status["observedGeneration"] = generation


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def apply_spec(name: str, uid: str, patch: kopf.Patch, retry: int, **_: Any) -> None:
    await _reconcile(name, uid, patch, retry)


@kopf.timer(GROUP, VERSION, PLURAL, interval=settings.resync_seconds, initial_delay=settings.resync_seconds)
async def resync(name: str, uid: str, patch: kopf.Patch, logger: Any, **_: Any) -> None:
    try:
        await _reconcile(name, uid, patch, 0)
    except (kopf.TemporaryError, kopf.PermanentError) as error:
        logger.warning("%s", error)  # the status says it; the next tick tries again


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def remove(name: str, uid: str, spec: Any, logger: Any, **_: Any) -> None:
    async with _locks.setdefault(uid, asyncio.Lock()):
        deleted = await teardown(kube(), name, uid, dict(spec))
    _locks.pop(uid, None)
    logger.info("deleted %d objects; kept the namespace, the NATS and database volumes and every Secret", len(deleted))
