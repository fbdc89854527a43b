"""Least privilege: each ServiceAccount may do exactly what its service's code calls on the Kubernetes API,
no more (an extra verb is a hole) and no less (a missing one is a 403 in production)."""

from __future__ import annotations

import pytest

from .kube_calls import Permission, permissions
from .manifests import OVERLAYS, ROOT, SERVICES, find, render


def granted(objects, account: str, namespace: str) -> set[Permission]:
    roles = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]): r
             for r in find(objects, "Role") + find(objects, "ClusterRole")}  # fmt: skip
    found = set()
    for binding in find(objects, "RoleBinding") + find(objects, "ClusterRoleBinding"):
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == account and s.get("namespace", namespace) == namespace
            for s in binding.get("subjects", [])
        ):
            continue
        ref = binding["roleRef"]
        role_namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], role_namespace, ref["name"])]
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], f"{ref['name']} grants a wildcard"
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        found.add(Permission(group, resource, verb))
    return found


# The shared access checks (TokenReview, SubjectAccessReview) live in rokcommon; a service that builds them calls them.
AUTHZ = ROOT / "libs" / "rokcommon" / "src" / "rokcommon"


def needed_by(service: str) -> tuple[set[Permission], list[str]]:
    source = SERVICES[service][1]
    needed, unresolved = permissions(source)
    if any("access_for(" in path.read_text() for path in source.rglob("*.py")):
        shared, more = permissions(AUTHZ)
        needed, unresolved = needed | shared, unresolved + more
    return needed, unresolved


def test_calls_are_read_from_code_as_rbac_needs_them(tmp_path):
    (tmp_path / "k.py").write_text(
        "from kubernetes import client, watch\n"
        "GROUP = 'argoproj.io'\n"
        "core = client.CoreV1Api()\n"
        "core.create_namespaced_persistent_volume_claim('ns', {})\n"
        "watch.Watch().stream(core.list_namespaced_pod, 'ns')\n"
        "client.CustomObjectsApi().get_namespaced_custom_object(GROUP, 'v1alpha1', 'ns', 'workflows', 'w')\n"
        "client.CoordinationV1Api().replace_namespaced_lease(name='l', namespace='ns', body={})\n"
        "core.read_namespaced_pod_log('p', 'ns')\n"
        "run_id = 'r'\n"
        "path = f'/apis/v2beta1/runs/{run_id}'\n"
    )
    needed, unresolved = permissions(tmp_path)
    assert not unresolved
    assert {str(p) for p in needed} == {
        "core/persistentvolumeclaims:create",
        "core/pods:list",
        "core/pods:watch",
        "argoproj.io/workflows:get",
        "coordination.k8s.io/leases:update",
        "core/pods/log:get",
        "pipelines.kubeflow.org/runs:get",
    }


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_account_may_do_exactly_what_its_code_calls(overlay: str, service: str):
    objects = render(OVERLAYS[overlay])
    needed, unresolved = needed_by(service)
    assert not unresolved, f"{service}: Kubernetes calls this test cannot read: {unresolved}"
    has = granted(objects, f"rok-{service}", "rok")
    missing = sorted(map(str, needed - has))
    extra = sorted(map(str, has - needed))
    assert not missing, f"{overlay}: rok-{service} lacks {missing}, which its code calls"
    assert not extra, f"{overlay}: rok-{service} may do {extra}, which its code never calls"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_a_service_without_kubernetes_calls_gets_no_token(overlay: str):
    objects = render(OVERLAYS[overlay])
    for service in SERVICES:
        needed, _ = needed_by(service)
        if needed:
            continue
        (account,) = [a for a in find(objects, "ServiceAccount") if a["metadata"]["name"] == f"rok-{service}"]
        assert account.get("automountServiceAccountToken") is False, f"rok-{service} mounts a token it never uses"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_a_service_with_kubernetes_calls_gets_its_token(overlay: str):
    objects = render(OVERLAYS[overlay])
    workloads = find(objects, "Deployment") + find(objects, "DaemonSet") + find(objects, "StatefulSet")
    for service, (_, source) in SERVICES.items():
        needed, _ = permissions(source)
        if not needed:
            continue
        (account,) = [a for a in find(objects, "ServiceAccount") if a["metadata"]["name"] == f"rok-{service}"]
        (workload,) = [w for w in workloads if w["metadata"]["name"] == f"rok-{service}"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"rok-{service}"
        mounted = pod.get("automountServiceAccountToken", account.get("automountServiceAccountToken", True))
        assert mounted, f"rok-{service} calls the Kubernetes API ({sorted(map(str, needed))}) without a token"
