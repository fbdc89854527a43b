"""The operator under kopf's own runner, against the fake API server: one RokCluster's life, scene by scene.

One runner serves the whole module (kopf takes a while to start); the scenes run in order and each leaves the
cluster as the next expects: a missing Secret, then create, drift, a change of spec, an unreachable store,
an invalid spec, deletion.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner
from roktesting.kubernetes import FakeKube
from roktesting.s3 import S3Server

ROOT = Path(__file__).resolve().parents[3]
CRD = ROOT / "deploy" / "operator" / "crd.yaml"
EXAMPLE = ROOT / "deploy" / "operator" / "rokcluster.yaml"
CLUSTERS = "/apis/rok.kubeflow.org/v1alpha1/rokclusters"
NS = "/api/v1/namespaces/rok"
NATS_USERS = ("pipeline-watcher", "snapshotter", "registry", "restorer", "guard", "cli", "operator")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something true (a sync point on the operator's work, not a delay)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except Exception:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}


def condition(kube: FakeKube, type_: str) -> dict[str, str]:
    status = kube.get(f"{CLUSTERS}/rok").get("status", {})
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[tuple[FakeKube, S3Server]]:
    kube = FakeKube().start()
    config = kube.write_kubeconfig(tmp_path_factory.mktemp("operator") / "kubeconfig")
    kube.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", yaml.safe_load(CRD.read_text()))
    kube.create("/api/v1/namespaces", {"metadata": {"name": "rok"}})
    for user in NATS_USERS:
        kube.create(f"{NS}/secrets", secret(f"rok-nats-{user}", {"password": f"pw-{user}"}))
    kube.create(f"{NS}/secrets", secret("rok-database", {"url": "postgresql://rok:pw@db:5432/rok"}))
    patch = pytest.MonkeyPatch()
    patch.setenv("ROK_KUBE", "kubeconfig")
    patch.setenv("ROK_KUBECONFIG", str(config))
    patch.setenv("ROK_RESYNC_SECONDS", "0.5")
    args = ["run", "--standalone", "--all-namespaces", "--verbose", "-m", "rok_operator.handlers"]
    try:
        with KopfRunner(args, timeout=60) as runner:
            wait_for("kopf to watch RokClusters", lambda: kube.watches(CLUSTERS))
            yield kube, s3_server
        assert runner.exit_code == 0, runner.output
        assert runner.exception is None
    finally:
        patch.undo()
        kube.stop()


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def test_a_missing_store_secret_is_degraded_with_its_name_and_retried(operator):
    kube, _ = operator
    kube.create(CLUSTERS, example())
    degraded = wait_for(
        "Degraded", lambda: condition(kube, "Degraded").get("status") == "True" and condition(kube, "Degraded")
    )
    assert degraded["reason"] == "SecretMissing"
    assert "rok/rok-s3" in degraded["message"]
    assert condition(kube, "Ready")["status"] == "False"
    assert not kube.list_objects("/apis/apps/v1/namespaces/rok/deployments"), "nothing applied before the Secret"


def test_once_the_secret_exists_every_object_of_the_prod_overlay_is_created_and_owned(operator):
    kube, s3 = operator
    kube.create(
        f"{NS}/secrets",
        secret(
            "rok-s3",
            {
                "repository": "s3://rok/prod",
                "access-key-id": s3.access_key,
                "secret-access-key": s3.secret_key,
                "endpoint": s3.endpoint,
            },
        ),
    )
    wait_for("Degraded cleared", lambda: condition(kube, "Degraded").get("status") == "False", timeout=20)
    cluster = kube.get(f"{CLUSTERS}/rok")
    from rok_operator.bundle import objects

    for expected in objects():
        meta = expected["metadata"]
        path = _path(expected)
        found = kube.get(path)
        assert found["spec" if "spec" in expected else "metadata"] is not None
        assert found.get("spec") == expected.get("spec"), f"{expected['kind']}/{meta['name']} differs from prod"
        assert found.get("data") == expected.get("data")
        if expected["kind"] == "Namespace":
            assert not found["metadata"].get("ownerReferences"), "the namespace (and its volumes) outlives rok"
        else:
            (ref,) = found["metadata"]["ownerReferences"]
            assert ref["uid"] == cluster["metadata"]["uid"] and ref["controller"] is True
    assert cluster["status"]["observedGeneration"] == cluster["metadata"]["generation"]
    assert cluster["status"]["components"]["registry"] == {"desired": 3, "ready": 0}
    assert condition(kube, "Progressing")["status"] == "True"


def _path(obj: dict[str, Any]) -> str:
    from rok_operator.kube import path_of

    return path_of(obj)


def test_ready_counts_follow_the_workloads(operator):
    kube, _ = operator
    for name in ("rok-registry", "rok-pipeline-watcher", "rok-restorer", "rok-otel-collector"):
        path = f"/apis/apps/v1/namespaces/rok/deployments/{name}"
        replicas = kube.get(path)["spec"].get("replicas", 1)
        kube.patch(path, {"status": {"readyReplicas": replicas, "replicas": replicas}})
    kube.patch("/apis/apps/v1/namespaces/rok/statefulsets/rok-nats", {"status": {"readyReplicas": 3}})
    kube.patch(
        "/apis/apps/v1/namespaces/rok/daemonsets/rok-snapshotter",
        {"status": {"desiredNumberScheduled": 2, "numberReady": 2}},
    )
    ready = wait_for("Ready", lambda: condition(kube, "Ready").get("status") == "True" and condition(kube, "Ready"))
    assert ready["reason"] == "AllReady"
    assert kube.get(f"{CLUSTERS}/rok")["status"]["components"]["snapshotter"] == {"desired": 2, "ready": 2}


def test_a_deleted_or_edited_child_is_restored(operator):
    kube, _ = operator
    kube.delete("/apis/apps/v1/namespaces/rok/daemonsets/rok-snapshotter")
    kube.patch("/apis/apps/v1/namespaces/rok/deployments/rok-registry", {"spec": {"replicas": 7}})
    wait_for("the DaemonSet back", lambda: kube.get("/apis/apps/v1/namespaces/rok/daemonsets/rok-snapshotter"))
    wait_for(
        "replicas back",
        lambda: kube.get("/apis/apps/v1/namespaces/rok/deployments/rok-registry")["spec"]["replicas"] == 3,
    )


def test_a_change_of_spec_rolls_out(operator):
    kube, _ = operator
    kube.patch(
        f"{CLUSTERS}/rok",
        {
            "spec": {
                "bus": {"replicas": 5},
                "registry": {"replicas": 2},
                "images": {"version": "0.2.0"},
                "snapshotter": {"nodeSelector": {"rok.kubeflow.org/volumes": "true"}},
            }
        },
    )
    generation = kube.get(f"{CLUSTERS}/rok")["metadata"]["generation"]
    wait_for(
        "the new generation observed", lambda: kube.get(f"{CLUSTERS}/rok")["status"]["observedGeneration"] == generation
    )
    nats = kube.get("/apis/apps/v1/namespaces/rok/statefulsets/rok-nats")
    assert nats["spec"]["replicas"] == 5
    (config,) = [v["configMap"]["name"] for v in nats["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    conf = kube.get(f"{NS}/configmaps/{config}")["data"]["nats.conf"]
    assert "nats://rok-nats-4.rok-nats-headless:6222" in conf

    def nats_configs() -> list[str]:
        names = [c["metadata"]["name"] for c in kube.list_objects(f"{NS}/configmaps")]
        return [n for n in names if n.startswith("rok-nats-config-")]

    from rok_operator.bundle import objects

    (overlays,) = [o["metadata"]["name"] for o in objects() if o["metadata"]["name"].startswith("rok-nats-config-")]
    assert config != overlays, "new content, new name: the servers restart with it"
    wait_for("the old NATS config pruned", lambda: nats_configs() == [config])
    registry = kube.get("/apis/apps/v1/namespaces/rok/deployments/rok-registry")
    assert registry["spec"]["replicas"] == 2
    assert registry["spec"]["template"]["spec"]["containers"][0]["image"] == "rok/registry:0.2.0"
    daemonset = kube.get("/apis/apps/v1/namespaces/rok/daemonsets/rok-snapshotter")
    assert daemonset["spec"]["template"]["spec"]["nodeSelector"] == {"rok.kubeflow.org/volumes": "true"}


def test_an_unreachable_store_is_degraded_and_recovers(operator):
    kube, s3 = operator
    kube.patch(f"{NS}/secrets/rok-s3", {"data": {"endpoint": base64.b64encode(b"http://127.0.0.1:9").decode()}})
    degraded = wait_for(
        "Degraded",
        lambda: condition(kube, "Degraded").get("reason") == "StoreUnreachable" and condition(kube, "Degraded"),
    )
    assert "127.0.0.1:9" in degraded["message"]
    kube.patch(f"{NS}/secrets/rok-s3", {"data": {"endpoint": base64.b64encode(s3.endpoint.encode()).decode()}})
    wait_for("recovered", lambda: condition(kube, "Degraded").get("status") == "False", timeout=20)


def test_an_invalid_spec_is_refused_naming_the_field(operator):
    kube, _ = operator
    kube.patch(f"{CLUSTERS}/rok", {"spec": {"bus": {"replicas": 4}}})
    degraded = wait_for(
        "InvalidSpec",
        lambda: condition(kube, "Degraded").get("reason") == "InvalidSpec" and condition(kube, "Degraded"),
    )
    assert "spec.bus.replicas" in degraded["message"]
    assert kube.get("/apis/apps/v1/namespaces/rok/statefulsets/rok-nats")["spec"]["replicas"] == 5, "nothing applied"
    kube.patch(f"{CLUSTERS}/rok", {"spec": {"bus": {"replicas": 3}}})
    wait_for("valid again", lambda: condition(kube, "Degraded").get("status") == "False", timeout=20)


def test_the_embedded_database_gets_a_volume_the_operator_never_owns(operator):
    kube, _ = operator
    kube.patch(f"{CLUSTERS}/rok", {"spec": {"database": {"type": "embedded"}, "registry": {"replicas": 1}}})
    claim = wait_for("the database's volume", lambda: kube.get(f"{NS}/persistentvolumeclaims/rok-registry-db"))
    assert not claim["metadata"].get("ownerReferences")
    wait_for(
        "the registry on SQLite",
        lambda: kube.get("/apis/apps/v1/namespaces/rok/deployments/rok-registry")["spec"]["replicas"] == 1,
    )
    registry = kube.get("/apis/apps/v1/namespaces/rok/deployments/rok-registry")
    env = {e["name"]: e for e in registry["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ROK_DATABASE_URL"]["value"].startswith("sqlite:////var/lib/rok/registry/")
    wait_for(
        "its disruption budget gone",
        lambda: (
            not kube.list_objects(
                "/apis/policy/v1/namespaces/rok/poddisruptionbudgets", field_selector="metadata.name=rok-registry"
            )
        ),
    )
    kube.patch(f"{CLUSTERS}/rok", {"spec": {"database": {"type": "postgresql"}, "registry": {"replicas": None}}})
    wait_for(
        "PostgreSQL again",
        lambda: kube.get("/apis/apps/v1/namespaces/rok/deployments/rok-registry")["spec"]["replicas"] == 3,
    )
    kube.get(f"{NS}/persistentvolumeclaims/rok-registry-db")  # the trial's database stays


def test_deleting_the_rokcluster_removes_its_objects_but_keeps_namespace_volumes_and_secrets(operator):
    kube, _ = operator
    claim = {"metadata": {"name": "data-rok-nats-0"}, "spec": {"resources": {"requests": {"storage": "20Gi"}}}}
    kube.create(f"{NS}/persistentvolumeclaims", claim)
    kube.create("/api/v1/namespaces", {"metadata": {"name": "kubeflow-user"}})
    kube.create("/api/v1/namespaces/kubeflow-user/persistentvolumeclaims", {"metadata": {"name": "workspace"}})
    assert "rok.kubeflow.org/finalizer" in kube.get(f"{CLUSTERS}/rok")["metadata"]["finalizers"]
    kube.delete(f"{CLUSTERS}/rok")
    wait_for("the RokCluster gone", lambda: not kube.list_objects(CLUSTERS), timeout=20)
    for path in (
        "/apis/apps/v1/namespaces/rok/deployments",
        "/apis/apps/v1/namespaces/rok/statefulsets",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
    ):
        assert not kube.list_objects(path), path
    kube.get(NS)
    kube.get(f"{NS}/persistentvolumeclaims/data-rok-nats-0")
    kube.get("/api/v1/namespaces/kubeflow-user/persistentvolumeclaims/workspace")
    kube.get(f"{NS}/persistentvolumeclaims/rok-registry-db")
    assert {s["metadata"]["name"] for s in kube.list_objects(f"{NS}/secrets")} >= {"rok-s3", "rok-database"}


def test_the_operator_may_do_exactly_what_it_called_and_what_it_grants_the_services(operator):
    kube, _ = operator
    from rok_operator.bundle import objects

    from .recorded_calls import granted, held_by_roles, needed

    rbac = [o for o in yaml.safe_load_all((ROOT / "deploy" / "operator" / "rbac.yaml").read_text()) if o]
    has = granted(rbac, "rok-operator", "rok-operator")
    called = needed(kube)
    held = held_by_roles(objects())
    wanted: dict[str | None, set] = {}
    for source in (called, held):
        for scope, permissions in source.items():
            wanted.setdefault(scope, set()).update(permissions)
    cluster_wide = has.get(None, set())
    for scope, permissions in sorted(wanted.items(), key=lambda kv: str(kv[0])):
        missing = permissions - cluster_wide - has.get(scope, set())
        assert not missing, f"rok-operator lacks, in {scope or 'the cluster'}: {sorted(missing)}"
    extra = cluster_wide - wanted.get(None, set())
    assert not extra, f"rok-operator may do cluster-wide what it needs only in a namespace, or never: {sorted(extra)}"
    for scope, permissions in has.items():
        if scope is not None:
            assert not permissions - wanted.get(scope, set()), f"{scope}: {sorted(permissions - wanted[scope])}"
            assert not permissions & cluster_wide, f"{scope}: granted twice {sorted(permissions & cluster_wide)}"
