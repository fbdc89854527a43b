"""The RBAC permissions a client needed, read from the requests the fake API server recorded, and those a set of
RBAC objects grants a service account (cluster-wide, or in one namespace)."""

from __future__ import annotations

import re
from typing import Any

from roktesting.kubernetes import FakeKube

Permission = tuple[str, str, str]  # API group ("" for core), resource (with /subresource), verb

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>[a-z]+))?$"
)
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def needed(kube: FakeKube) -> dict[str | None, set[Permission]]:
    """namespace (None: cluster-scoped or cluster-wide) → the permissions its recorded requests needed."""
    found: dict[str | None, set[Permission]] = {}
    for request in kube.requests:
        match = _PATH.match(request.path.rstrip("/"))
        if not match:  # /version and discovery: open to every authenticated client
            continue
        plural, name, ns = match["plural"], match["name"], match["ns"]
        if request.method == "GET":
            verb = "get" if name else ("watch" if request.params.get("watch") in ("true", "1") else "list")
        else:
            verb = _VERBS[request.method]
        resource = plural + (f"/{match['sub']}" if match["sub"] else "")
        found.setdefault(ns, set()).add((match["group"] or "", resource, verb))
    return found


def _rules(role: dict[str, Any]) -> set[Permission]:
    granted = set()
    for rule in role.get("rules", []):
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], f"{role['metadata']['name']} has a wildcard"
        for group in rule.get("apiGroups", [""]):
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    return granted


def granted(objects: list[dict[str, Any]], account: str, namespace: str) -> dict[str | None, set[Permission]]:
    """namespace (None: cluster-wide) → what ``account`` (in ``namespace``) may do, from these RBAC objects."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}  # fmt: skip
    found: dict[str | None, set[Permission]] = {}
    for binding in [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]:
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == account and s.get("namespace") == namespace
            for s in binding.get("subjects", [])
        ):
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        role = roles[
            (ref["kind"], binding["metadata"].get("namespace") if ref["kind"] == "Role" else None, ref["name"])
        ]
        found.setdefault(scope, set()).update(_rules(role))
    return found


def held_by_roles(objects: list[dict[str, Any]]) -> dict[str | None, set[Permission]]:
    """What whoever creates these Roles and ClusterRoles must itself hold (Kubernetes refuses to let a subject
    grant what it does not have, unless it may `escalate`, which is as good as everything)."""
    found: dict[str | None, set[Permission]] = {}
    for role in objects:
        if role["kind"] == "ClusterRole":
            found.setdefault(None, set()).update(_rules(role))
        elif role["kind"] == "Role":
            found.setdefault(role["metadata"]["namespace"], set()).update(_rules(role))
    return found
