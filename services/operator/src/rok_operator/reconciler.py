"""One pass of reconciliation: check what the spec needs, apply what it renders, remove what it no longer renders,
and report how far the workloads are. Teardown removes what a RokCluster created, and nothing it must keep.

Failures come out as :class:`Degraded` with a reason a platform team can act on (``SecretMissing``,
``StoreUnreachable``, ``InvalidSpec``, ``ApplyFailed``); whether to retry is the caller's (kopf's) business.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from rokcommon.errors import RokError, TemporaryError

from rok_operator import rendering, store
from rok_operator.kube import Kube, cluster_scoped
from rok_operator.rendering import CLUSTER_LABEL, Owner
from rok_operator.spec import InvalidSpec, RokClusterSpec, parse

log = logging.getLogger(__name__)

Obj = dict[str, Any]

# Kinds the operator never lists nor deletes (its RBAC cannot): what it creates of them is retained.
NEVER_DELETED = ("Namespace", "PersistentVolumeClaim")
# Deleted first on teardown: nothing should call the step guard's webhook once its server is going away.
_FIRST = ("MutatingWebhookConfiguration",)


@dataclass
class Degraded(Exception):
    reason: str
    message: str
    temporary: bool

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass
class Components:
    """Per workload, what it wants and what is ready (pods for a Deployment/StatefulSet, nodes for a DaemonSet)."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(c["ready"] >= c["desired"] for c in self.counts.values())

    def waiting(self) -> list[str]:
        return [f"{n} {c['ready']}/{c['desired']}" for n, c in sorted(self.counts.items()) if c["ready"] < c["desired"]]


def _required_secrets(objects: list[Obj]) -> list[tuple[str, str]]:
    """(Secret, the field of the spec or the doc that names it) for every Secret a container needs to start."""
    found: dict[str, str] = {}
    for obj in rendering.workloads(objects):
        pod = obj["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    found.setdefault(ref["name"], f"{obj['kind']} {obj['metadata']['name']}, {item['name']}")
    return sorted(found.items())


async def reconcile(kube: Kube, name: str, uid: str, raw_spec: Obj) -> Components:
    try:
        spec = parse(raw_spec)
    except InvalidSpec as error:
        raise Degraded("InvalidSpec", str(error), temporary=False) from None
    owner = Owner(name, uid)
    objects = rendering.render(spec, owner)
    await _check_secrets(kube, spec, objects)
    await _check_store(kube, spec)
    try:
        for obj in objects:
            await kube.apply(obj)
        await _prune(kube, spec, objects, owner)
        return await _components(kube, objects)
    except RokError as error:
        raise Degraded("ApplyFailed", str(error), temporary=isinstance(error, TemporaryError)) from None


async def _check_secrets(kube: Kube, spec: RokClusterSpec, objects: list[Obj]) -> None:
    missing = []
    for secret, user in _required_secrets(objects):
        if await _read_secret(kube, spec.namespace, secret) is None:
            missing.append(f"{spec.namespace}/{secret} (for {user})")
    if missing:
        raise Degraded(
            "SecretMissing",
            f"create the Secrets {', '.join(missing)} (docs/operations.md, 'Install')",
            temporary=True,
        )


async def _read_secret(kube: Kube, namespace: str, name: str) -> dict[str, str] | None:
    try:
        return await kube.read_secret(namespace, name)
    except TemporaryError as error:
        raise Degraded("ApiUnreachable", str(error), temporary=True) from None


async def _check_store(kube: Kube, spec: RokClusterSpec) -> None:
    secret = await _read_secret(kube, spec.namespace, spec.store.secret_name) or {}
    try:
        await store.check_reachable(store.endpoint_of(secret, spec.store.secret_name))
    except store.StoreSecretInvalid as error:
        raise Degraded("StoreSecretInvalid", str(error), temporary=True) from None
    except store.StoreUnreachable as error:
        raise Degraded("StoreUnreachable", str(error), temporary=True) from None


def _kinds(objects: list[Obj]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((o["apiVersion"], o["kind"]) for o in objects))


async def _owned_by(kube: Kube, spec: RokClusterSpec, owner: Owner, kinds: list[tuple[str, str]]) -> list[Obj]:
    found = []
    for api_version, kind in kinds:
        if kind in NEVER_DELETED:
            continue
        namespace = None if cluster_scoped(kind) else spec.namespace
        for obj in await kube.owned(api_version, kind, namespace, owner.name, CLUSTER_LABEL):
            if any(ref.get("uid") == owner.uid for ref in obj["metadata"].get("ownerReferences", [])):
                found.append(obj)
    return found


async def _prune(kube: Kube, spec: RokClusterSpec, objects: list[Obj], owner: Owner) -> None:
    """Delete the children this RokCluster owns that it renders no more (an old ConfigMap, NATS once external)."""
    wanted = {(o["kind"], o["metadata"]["name"]) for o in objects}
    every_kind = _kinds(rendering.render(RokClusterSpec(), owner)) + _kinds(objects)
    for obj in await _owned_by(kube, spec, owner, list(dict.fromkeys(every_kind))):
        if (obj["kind"], obj["metadata"]["name"]) not in wanted:
            log.info("removing %s %s: the spec no longer asks for it", obj["kind"], obj["metadata"]["name"])
            await kube.delete(obj)


async def _components(kube: Kube, objects: list[Obj]) -> Components:
    components = Components()
    for obj in rendering.workloads(objects):
        status = await kube.read_status(obj) or {}
        if obj["kind"] == "DaemonSet":
            desired, ready = status.get("desiredNumberScheduled", 0), status.get("numberReady", 0)
        else:
            desired, ready = obj["spec"].get("replicas", 1), status.get("readyReplicas", 0)
        components.counts[obj["metadata"]["name"].removeprefix("rok-")] = {"desired": desired, "ready": ready}
    return components


async def teardown(kube: Kube, name: str, uid: str, raw_spec: Obj) -> list[str]:
    """Delete every child the RokCluster owns, the webhook first; what is retained stays. The deleted, by name."""
    try:
        spec = parse(raw_spec)
    except InvalidSpec:
        spec = RokClusterSpec()  # a spec refused at creation still owns what an earlier, valid spec created
    owner = Owner(name, uid)
    kinds = _kinds(rendering.render(spec, owner)) + _kinds(rendering.render(RokClusterSpec(), owner))
    owned = await _owned_by(kube, spec, owner, list(dict.fromkeys(kinds)))
    owned.sort(key=lambda o: o["kind"] not in _FIRST)
    deleted = []
    for obj in owned:
        if rendering.is_retained(obj):
            continue
        await kube.delete(obj)
        deleted.append(f"{obj['kind']}/{obj['metadata']['name']}")
    return deleted
