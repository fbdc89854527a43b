"""The resource types the fake Kubernetes API server knows, and the discovery documents it serves for them.

Built-in types are listed here; a ``CustomResourceDefinition`` created on the server adds its group, versions,
kind, scope and subresources (:meth:`ResourceTypes.register_crd`), as the real server does. Any other path still
works as an untyped collection (kind guessed from the plural, namespaced, no subresources), so tests that store
e.g. Argo ``workflows`` need no CRD. What discovery serves (``/api``, ``/api/v1``, ``/apis``, ``/apis/G/V``) is
what kopf and the official client read to find resources and whether they have a ``status`` subresource.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResourceType:
    api: str  # "api/v1" or "apis/GROUP/VERSION", as in a path
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = False  # has a status subresource: /status writes status only, the object's own writes keep it
    singular: str = ""
    short_names: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return self.api.removeprefix("apis/").removeprefix("api/")

    def discovery(self) -> list[dict[str, Any]]:
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        entry = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
            "shortNames": list(self.short_names),
        }
        status = {"name": f"{self.plural}/status", "singularName": "", "namespaced": self.namespaced,
                  "kind": self.kind, "verbs": ["get", "patch", "update"]}  # fmt: skip
        return [entry, status] if self.status else [entry]


def _builtin() -> list[ResourceType]:
    core = [
        ("pods", "Pod", True, True),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True, True),
        ("persistentvolumes", "PersistentVolume", False, True),
        ("namespaces", "Namespace", False, True),
        ("configmaps", "ConfigMap", True, False),
        ("secrets", "Secret", True, False),
        ("services", "Service", True, True),
        ("serviceaccounts", "ServiceAccount", True, False),
        ("events", "Event", True, False),
        ("nodes", "Node", False, True),
    ]
    grouped = [
        ("apps/v1", "deployments", "Deployment", True, True),
        ("apps/v1", "statefulsets", "StatefulSet", True, True),
        ("apps/v1", "daemonsets", "DaemonSet", True, True),
        ("batch/v1", "jobs", "Job", True, True),
        ("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True, True),
        ("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True, False),
        ("networking.k8s.io/v1", "ingresses", "Ingress", True, True),
        ("rbac.authorization.k8s.io/v1", "roles", "Role", True, False),
        ("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", True, False),
        ("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False, False),
        ("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False, False),
        ("coordination.k8s.io/v1", "leases", "Lease", True, False),
        (
            "admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            False,
            False,
        ),
        ("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", False, True),
    ]
    return [ResourceType("api/v1", p, k, n, s) for p, k, n, s in core] + [
        ResourceType(f"apis/{gv}", p, k, n, s) for gv, p, k, n, s in grouped
    ]


CRDS = ("apis/apiextensions.k8s.io/v1", "customresourcedefinitions")


class ResourceTypes:
    """Types by (api, plural); not thread-safe on its own (the server calls it under its lock)."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str], ResourceType] = {(t.api, t.plural): t for t in _builtin()}

    def get(self, api: str, plural: str) -> ResourceType:
        known = self._types.get((api, plural))
        if known is not None:
            return known
        kind = next((t.kind for t in self._types.values() if t.plural == plural), None)
        return ResourceType(api, plural, kind or plural[:-1].capitalize())

    def known(self, api: str, plural: str) -> bool:
        return (api, plural) in self._types

    def register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            self._types[(f"apis/{spec['group']}/{version['name']}", names["plural"])] = ResourceType(
                api=f"apis/{spec['group']}/{version['name']}",
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                status="status" in (version.get("subresources") or {}),
                singular=names.get("singular", ""),
                short_names=tuple(names.get("shortNames", ())),
            )

    def unregister_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            self._types.pop((f"apis/{spec['group']}/{version['name']}", spec["names"]["plural"]), None)

    # --- discovery -----------------------------------------------------------------------------------------

    def document(self, path: str) -> dict[str, Any] | None:
        """The discovery document at ``path`` (``/api``, ``/apis``, ``/api/v1``, ``/apis/G/V``), or None."""
        path = path.rstrip("/")
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for t in self._types.values():
                if t.api.startswith("apis/"):
                    group, version = t.group_version.split("/")
                    groups.setdefault(group, [])
                    if version not in groups[group]:
                        groups[group].append(version)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
                    }
                    for group, versions in sorted(groups.items())
                ],
            }
        api = path.lstrip("/")
        if api == "api/v1" or (api.startswith("apis/") and api.count("/") == 2):
            resources = [r for t in self._types.values() if t.api == api for r in t.discovery()]
            if not resources:
                return None
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api.split("/", 1)[1],
                    "resources": resources}  # fmt: skip
        return None
