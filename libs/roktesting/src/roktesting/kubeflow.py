"""Kubeflow's multi-user RBAC in the fake Kubernetes API: the profile roles and a profile's bindings.

As Kubeflow installs them: ``kubeflow-admin`` ⊃ ``kubeflow-edit`` ⊃ ``kubeflow-view``, each an aggregated
ClusterRole filled from the ClusterRoles labelled ``rbac.authorization.kubeflow.org/aggregate-to-kubeflow-…``
(the Kubernetes part, the notebook controller's part and Kubeflow Pipelines' part); a profile is a namespace
whose owner is bound to ``kubeflow-admin`` (RoleBinding ``namespaceAdmin``), whose contributors get
``kubeflow-edit`` or ``kubeflow-view``, and whose service accounts ``default-editor`` and ``default-viewer``
get the same.
"""

from __future__ import annotations

from typing import Any

from roktesting.kubernetes import FakeKube

RBAC_API = "/apis/rbac.authorization.k8s.io/v1"
_LABEL = "rbac.authorization.kubeflow.org/aggregate-to-kubeflow-"
_KUBERNETES_READ = ["get", "list", "watch"]
_KUBERNETES_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_PIPELINES = "pipelines.kubeflow.org"


def _cluster_role(name: str, *, label: str | None = None, aggregates: str | None = None, rules: Any = ()) -> dict:
    role: dict[str, Any] = {"metadata": {"name": name}, "rules": list(rules)}
    if label:
        role["metadata"]["labels"] = {_LABEL + label: "true"}
    if aggregates:
        role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {_LABEL + aggregates: "true"}}]}
    return role


def install_profile_roles(kube: FakeKube) -> None:
    """The ClusterRoles every Kubeflow install has (the parts rok's checks touch)."""
    core = ["pods", "persistentvolumeclaims", "services", "configmaps", "events"]
    roles = [
        _cluster_role("kubeflow-admin", aggregates="admin"),
        _cluster_role("kubeflow-edit", label="admin", aggregates="edit"),
        _cluster_role("kubeflow-view", label="edit", aggregates="view"),
        _cluster_role(
            "kubeflow-kubernetes-edit",
            label="edit",
            rules=[{"apiGroups": [""], "resources": core, "verbs": _KUBERNETES_WRITE}],
        ),
        _cluster_role(
            "kubeflow-kubernetes-view",
            label="view",
            rules=[{"apiGroups": [""], "resources": core, "verbs": _KUBERNETES_READ}],
        ),
        _cluster_role(
            "kubeflow-notebooks-edit",
            label="edit",
            rules=[{"apiGroups": ["kubeflow.org"], "resources": ["notebooks"], "verbs": ["*"]}],
        ),
        _cluster_role(
            "kubeflow-notebooks-view",
            label="view",
            rules=[{"apiGroups": ["kubeflow.org"], "resources": ["notebooks"], "verbs": _KUBERNETES_READ}],
        ),
        _cluster_role(  # as KFP's multi-user install aggregates it (its API server checks these verbs)
            "kubeflow-pipelines-edit",
            label="edit",
            rules=[
                {
                    "apiGroups": [_PIPELINES],
                    "resources": ["pipelines", "pipelines/versions"],
                    "verbs": ["create", "delete", "update"],
                },
                {
                    "apiGroups": [_PIPELINES],
                    "resources": ["experiments"],
                    "verbs": ["archive", "create", "delete", "unarchive"],
                },
                {
                    "apiGroups": [_PIPELINES],
                    "resources": ["runs"],
                    "verbs": ["archive", "create", "delete", "retry", "terminate", "unarchive"],
                },
            ],
        ),
        _cluster_role(
            "kubeflow-pipelines-view",
            label="view",
            rules=[
                {
                    "apiGroups": [_PIPELINES],
                    "resources": ["pipelines", "pipelines/versions", "experiments", "runs"],
                    "verbs": ["get", "list"],
                },
            ],
        ),
    ]
    for role in roles:
        kube.create(f"{RBAC_API}/clusterroles", role)


def _binding(name: str, role: str, subject: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [subject],
    }


def add_profile(kube: FakeKube, namespace: str, owner: str) -> None:
    """A profile namespace owned by ``owner``, with its default service accounts bound as Kubeflow binds them."""
    kube.create(
        "/api/v1/namespaces",
        {"metadata": {"name": namespace, "labels": {"app.kubernetes.io/part-of": "kubeflow-profile"}}},
    )
    bindings = f"{RBAC_API}/namespaces/{namespace}/rolebindings"
    kube.create(bindings, _binding("namespaceAdmin", "kubeflow-admin", {"kind": "User", "name": owner}))
    for account, role in (("default-editor", "kubeflow-edit"), ("default-viewer", "kubeflow-view")):
        subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        kube.create(bindings, _binding(account, role, subject))


def add_contributor(kube: FakeKube, namespace: str, user: str, role: str = "kubeflow-view") -> None:
    """``user`` may work in ``namespace`` with ``role`` (``kubeflow-edit`` or ``kubeflow-view``)."""
    name = f"user-{user.replace('@', '-').replace('.', '-')}-clusterrole-{role.removeprefix('kubeflow-')}"
    subject = {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}
    kube.create(f"{RBAC_API}/namespaces/{namespace}/rolebindings", _binding(name, role, subject))
