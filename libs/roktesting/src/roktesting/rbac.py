"""What the fake Kubernetes API answers to TokenReview and SubjectAccessReview, as a real API server does.

Access is derived from the RBAC objects stored in the fake (``rbac.authorization.k8s.io/v1`` Roles, ClusterRoles,
RoleBindings and ClusterRoleBindings): a request is allowed when a binding whose subjects include the user
(``User``), one of its groups (``Group``) or its service account (``ServiceAccount``, the user
``system:serviceaccount:<ns>:<name>``) refers to a role with a rule matching the verb, API group and resource
(each may be ``*``; ``resourceNames``, when a rule has them, must name the object). A RoleBinding grants only in
its own namespace, whatever it refers to; a ClusterRoleBinding everywhere. A ClusterRole with an
``aggregationRule`` holds the rules of every ClusterRole its selectors match, as the API server's aggregation
controller fills it in (Kubeflow's ``kubeflow-edit`` and ``kubeflow-view`` are built that way).

Tokens are those a test registered (:meth:`Tokens.add`, :meth:`Tokens.service_account`); any other token is
not authenticated.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RBAC = "apis/rbac.authorization.k8s.io/v1"
TOKEN_REVIEWS = ("apis/authentication.k8s.io/v1", "tokenreviews")
ACCESS_REVIEWS = ("apis/authorization.k8s.io/v1", "subjectaccessreviews")

Objects = Mapping[tuple[str, str, str | None, str], dict[str, Any]]


@dataclass
class Tokens:
    """Bearer tokens the fake API server knows: token → (user name, groups)."""

    known: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    def add(self, user: str, groups: Iterable[str] = (), token: str | None = None) -> str:
        token = token or secrets.token_urlsafe(24)
        self.known[token] = (user, (*groups, "system:authenticated"))
        return token

    def service_account(self, namespace: str, name: str) -> str:
        """A token of the service account ``namespace/name``, with the groups the API server gives it."""
        groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")
        return self.add(f"system:serviceaccount:{namespace}:{name}", groups)

    def review(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("spec") or {}
        known = self.known.get(spec.get("token") or "")
        status: dict[str, Any]
        if known is None:
            status = {"authenticated": False, "error": "invalid bearer token"}
        else:
            user, groups = known
            status = {"authenticated": True, "user": {"username": user, "groups": list(groups)}}
            if spec.get("audiences"):
                status["audiences"] = spec["audiences"]
        return {**_echo(body, "TokenReview", TOKEN_REVIEWS[0]), "status": status}


def access_review(objects: Objects, body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a SubjectAccessReview ``body`` from the RBAC objects in ``objects``."""
    spec = body.get("spec") or {}
    attributes = spec.get("resourceAttributes")
    status: dict[str, Any] = {"allowed": False}
    if attributes:
        reason = _allowed_by(objects, spec.get("user") or "", tuple(spec.get("groups") or ()), attributes)
        status = {"allowed": True, "reason": reason} if reason else {"allowed": False}
    return {**_echo(body, "SubjectAccessReview", ACCESS_REVIEWS[0]), "status": status}


def _echo(body: dict[str, Any], kind: str, api: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "apiVersion": api.removeprefix("apis/"),
        "metadata": {"creationTimestamp": None},
        "spec": body.get("spec") or {},
    }


def _allowed_by(objects: Objects, user: str, groups: tuple[str, ...], attributes: dict[str, Any]) -> str | None:
    namespace = attributes.get("namespace") or None
    for (api, plural, ns, name), binding in objects.items():
        if api != RBAC or plural not in ("rolebindings", "clusterrolebindings"):
            continue
        if plural == "rolebindings" and (namespace is None or ns != namespace):
            continue
        if not any(_is_subject(s, user, groups, ns) for s in binding.get("subjects") or ()):
            continue
        ref = binding.get("roleRef") or {}
        rules = _rules(objects, ref.get("kind", ""), ref.get("name", ""), ns)
        if any(_matches(rule, attributes) for rule in rules):
            where = f"{ns}/{name}" if ns else name
            return f'RBAC: allowed by {binding.get("kind", plural)} "{where}" of {ref.get("kind")} "{ref.get("name")}"'
    return None


def _is_subject(subject: dict[str, Any], user: str, groups: tuple[str, ...], binding_ns: str | None) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(user) and name == user
    if kind == "Group":
        return name in groups
    if kind == "ServiceAccount":
        return user == f"system:serviceaccount:{subject.get('namespace') or binding_ns}:{name}"
    return False


def _rules(objects: Objects, kind: str, name: str, ns: str | None) -> list[dict[str, Any]]:
    if kind == "Role":
        role = objects.get((RBAC, "roles", ns, name))
        return list((role or {}).get("rules") or ())
    if kind == "ClusterRole":
        return _cluster_role_rules(objects, name, seen=set())
    return []


def _cluster_role_rules(objects: Objects, name: str, seen: set[str]) -> list[dict[str, Any]]:
    role = objects.get((RBAC, "clusterroles", None, name))
    if role is None or name in seen:
        return []
    seen.add(name)
    rules = list(role.get("rules") or ())
    for selector in (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or ():
        wanted = selector.get("matchLabels") or {}
        for (api, plural, _, other), obj in objects.items():
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if (
                api == RBAC
                and plural == "clusterroles"
                and wanted
                and all(labels.get(k) == v for k, v in wanted.items())
            ):
                rules += _cluster_role_rules(objects, other, seen)
    return rules


def _matches(rule: dict[str, Any], attributes: dict[str, Any]) -> bool:
    resource = attributes.get("resource") or ""
    if attributes.get("subresource"):
        resource = f"{resource}/{attributes['subresource']}"
    names = rule.get("resourceNames") or ()
    return (
        _has(rule.get("verbs"), attributes.get("verb") or "")
        and _has(rule.get("apiGroups"), attributes.get("group") or "")
        and _has(rule.get("resources"), resource)
        and (not names or attributes.get("name") in names)
    )


def _has(values: Iterable[str] | None, wanted: str) -> bool:
    values = tuple(values or ())
    return "*" in values or wanted in values
