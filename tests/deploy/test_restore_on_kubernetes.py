"""Restores into Kubernetes (rok_restorer.kubernetes) against the fake API server, with a real S3 store.

The cluster's other parts are played by roktesting.kubecluster: claims bind to provisioned volumes (a directory
each), and a kubelet runs each restore pod's own command (`sh -c <script> <volume dir> <snapshot> <repository>
<termination log>`) for real, with the pod's Secret's variables only; what the command writes to the termination
log becomes the pod's termination message, as on a real node. The objects the restorer creates are checked field
by field, against the API's schemas, and the Notebook against the Notebook CRD's own schema.
"""

from __future__ import annotations

import asyncio
import copy
import os
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rok_restorer.kubernetes import (
    MANAGED_BY,
    KubernetesSettings,
    KubernetesTargets,
    kubernetes_targets,
)
from rok_restorer.targets import VolumeToRestore
from rokcommon.errors import PermanentError, TemporaryError
from rokcommon.events import NotebookTarget, PvcTarget
from rokstore import init_repository, snapshot
from roktesting.kubecluster import Cluster, schema_errors

from . import crds
from .trees import same_tree

NS = "kubeflow-user-example-com"
BIN = Path(sys.executable).parent


def _fill(root: Path, seed: int) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text(f"volume {seed}\n" * 100)
    (root / "sub" / "data.bin").write_bytes(os.urandom(3000) * (seed + 1))
    (root / "link").symlink_to("notes.txt")
    return root


@pytest.fixture
async def stored(s3_repo_url: str, tmp_path: Path) -> dict[str, Any]:
    """An S3 repository holding a snapshot of a workspace and of a data volume."""
    sources = {"workspace": _fill(tmp_path / "src-workspace", 1), "data": _fill(tmp_path / "src-data", 2)}
    volumes = []
    async with await init_repository(s3_repo_url, cache_dir=tmp_path / "cache") as repo:
        for name, path in sources.items():
            snap = await snapshot(repo, path)
            volumes.append(VolumeToRestore(name, snap.snapshot_id, s3_repo_url, size=5 * 1024**3))
    return {"sources": sources, "volumes": volumes}


def running(fake, root: Path, fail: set[str] | None = None) -> Cluster:
    """Volumes that bind, and a kubelet that runs each restore pod's own command for real (the object store's
    variables from the pod's Secret only), on node-a."""
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(root)}
    return Cluster(fake, root, environment=env, namespaces=(NS,), fail=fail or set())


@pytest.fixture
def cluster(fake_kube):
    """Snapshotters on node-a (running) and node-b (still pending), and an unrelated pod on node-c."""
    for name, node, phase, app in (
        ("rok-snapshotter-a", "node-a", "Running", "rok-snapshotter"),
        ("rok-snapshotter-b", "node-b", "Pending", "rok-snapshotter"),
        ("other", "node-c", "Running", "other"),
    ):
        fake_kube.create(
            "/api/v1/namespaces/rok/pods",
            {
                "metadata": {"name": name, "labels": {"app.kubernetes.io/name": app}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": phase},
            },
        )
    return fake_kube


SETTINGS = KubernetesSettings(
    kube="incluster", restore_image="rok/restorer:9.9", restore_poll_interval=0.05, restore_pod_timeout=20
)


async def _restore_all(target, volumes) -> list:
    await target.claim()

    async def never(path):  # a Kubernetes target restores in its pod, never into a local directory
        raise AssertionError("restored locally")

    return list(await asyncio.gather(*(target.restore_volume(v, never) for v in volumes)))


def _objects(fake, plural: str, api: str = "api/v1") -> dict[str, dict[str, Any]]:
    return {k[3]: o for k, o in fake.objects.items() if k[0] == api and k[1] == plural and k[2] == NS}


async def test_a_volume_is_restored_into_a_new_pvc_by_a_pod_beside_a_snapshotter(cluster, stored, tmp_path):
    workspace = stored["volumes"][0]
    model = PvcTarget(namespace=NS, name="restored-ws", storage_class="fast-ssd")
    target = KubernetesTargets(cluster.api_client, SETTINGS)(model, [workspace])

    with running(cluster, tmp_path / "node").running() as kube:
        (restored,) = await _restore_all(target, [workspace])

    # the staging claim that was filled is gone: its volume is the new claim's, which is bound from the start
    (claim,) = _objects(cluster, "persistentvolumeclaims").values()
    assert claim["metadata"]["name"] == "restored-ws"
    assert claim["metadata"]["labels"] == {**MANAGED_BY, "rok.kubeflow.org/volume": "workspace"}
    assert claim["metadata"]["annotations"] == {"rok.kubeflow.org/snapshot": workspace.snapshot_id}
    (volume,) = kube.volumes.provisioned
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "7Gi"}},  # 5 GiB recorded, a quarter of headroom
        "storageClassName": "fast-ssd",
        "volumeName": volume,
    }
    assert claim["status"]["phase"] == "Bound"
    assert schema_errors(claim, "V1PersistentVolumeClaim") == []
    pv = cluster.get(f"/api/v1/persistentvolumes/{volume}")
    assert pv["spec"]["claimRef"]["name"] == "restored-ws" and pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"  # given back once the claim was bound
    assert "rok.kubeflow.org/reclaim-policy" not in pv["metadata"].get("annotations", {})
    (run,) = kube.kubelet.ran.values()
    pod = run["pod"]
    assert schema_errors(pod, "V1Pod") == []
    secret = run["secrets"][pod["metadata"]["name"]]
    assert pod["metadata"]["name"] == "rok-restore-restored-ws"
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]}]}]
    assert spec["volumes"] == [{"name": "volume", "persistentVolumeClaim": {"claimName": "rok-staging-restored-ws"}}]
    (container,) = spec["containers"]
    assert container["image"] == "rok/restorer:9.9"
    assert container["command"][3:] == ["/volume", workspace.snapshot_id, workspace.repository, "/dev/termination-log"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["volumeMounts"] == [{"name": "volume", "mountPath": "/volume"}]
    assert container["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"],
    }
    # The credentials travel in a Secret the pod owns, and the pod is gone once it ended.
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}
    ]
    assert secret["stringData"]["AWS_ACCESS_KEY_ID"] == os.environ["AWS_ACCESS_KEY_ID"]
    assert "rok-restore-restored-ws" not in _objects(cluster, "pods")
    assert "rok-restore-restored-ws" not in _objects(cluster, "secrets")  # collected with its owner
    # The volume holds exactly what was snapshotted, and the outcome says where it is.
    assert same_tree(stored["sources"]["workspace"], kube.claim_directory(NS, "restored-ws"))
    assert restored.location == f"{NS}/restored-ws"
    assert restored.snapshot_id == workspace.snapshot_id
    regular = [p for p in stored["sources"]["workspace"].rglob("*") if p.is_file() and not p.is_symlink()]
    assert restored.files == len(regular)
    assert restored.bytes == sum(p.stat().st_size for p in regular)


async def test_a_notebook_server_mounts_a_new_pvc_per_volume_workspace_first(cluster, stored, tmp_path):
    model = NotebookTarget(namespace=NS, name="my-nb", image="jupyter/scipy:1")
    volumes = stored["volumes"]
    target = KubernetesTargets(cluster.api_client, SETTINGS)(model, volumes)

    with running(cluster, tmp_path / "node").running() as kube:
        await _restore_all(target, volumes)

    claims = _objects(cluster, "persistentvolumeclaims")
    assert set(claims) == {"my-nb-workspace", "my-nb-data"}
    assert same_tree(stored["sources"]["workspace"], kube.claim_directory(NS, "my-nb-workspace"))
    assert same_tree(stored["sources"]["data"], kube.claim_directory(NS, "my-nb-data"))
    assert len(kube.kubelet.ran) == 2
    notebook = _objects(cluster, "notebooks", "apis/kubeflow.org/v1")["my-nb"]
    assert notebook["apiVersion"] == "kubeflow.org/v1"
    assert notebook["kind"] == "Notebook"
    assert notebook["metadata"]["labels"] == {"app": "my-nb", **MANAGED_BY}
    assert notebook["metadata"]["annotations"] == {"notebooks.kubeflow.org/server-type": "jupyter"}
    pod = notebook["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "default-editor"
    (container,) = pod["containers"]
    assert container["name"] == "my-nb"
    assert container["image"] == "jupyter/scipy:1"
    # As the notebook form mounts "Existing" volumes: the volume is named for its claim.
    assert container["volumeMounts"] == [
        {"name": "my-nb-workspace", "mountPath": "/home/jovyan"},
        {"name": "my-nb-data", "mountPath": "/home/jovyan/data"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    assert pod["volumes"] == [
        {"name": "my-nb-workspace", "persistentVolumeClaim": {"claimName": "my-nb-workspace"}},
        {"name": "my-nb-data", "persistentVolumeClaim": {"claimName": "my-nb-data"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]
    _validate_notebook(notebook)


def _validate_notebook(notebook: dict[str, Any]) -> None:
    crds.validate(notebook)


def test_the_notebook_schema_refuses_what_the_notebook_controller_would_not_run():
    good = {"apiVersion": "kubeflow.org/v1", "kind": "Notebook", "metadata": {"name": "n"}, "spec": {}}
    good["spec"] = {"template": {"spec": {"containers": [{"name": "n", "image": "i"}]}}}
    _validate_notebook(good)
    bad = copy.deepcopy(good)
    bad["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []  # a typo the API server would drop
    with pytest.raises(jsonschema.ValidationError):
        _validate_notebook(bad)
    bad = copy.deepcopy(good)
    del bad["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(jsonschema.ValidationError):
        _validate_notebook(bad)


async def test_a_failed_restore_pod_leaves_no_notebook_and_discard_removes_what_the_request_made(
    cluster, stored, tmp_path
):
    volumes = stored["volumes"]
    target = KubernetesTargets(cluster.api_client, SETTINGS)(NotebookTarget(namespace=NS, name="my-nb"), volumes)

    with running(cluster, tmp_path / "node", fail={"rok-staging-my-nb-data"}).running():
        with pytest.raises(TemporaryError, match="object store is unreachable"):
            await _restore_all(target, volumes)
        assert "my-nb" not in _objects(cluster, "notebooks", "apis/kubeflow.org/v1")
        await target.discard()
    assert not _objects(cluster, "persistentvolumeclaims")
    assert not _objects(cluster, "pods")


ANY_VOLUME = VolumeToRestore("workspace", "ab" * 32, "s3://bucket/repo", size=1)


async def test_an_existing_pvc_is_refused_and_never_discarded(cluster):
    cluster.create(f"/api/v1/namespaces/{NS}/persistentvolumeclaims", {"metadata": {"name": "taken"}, "spec": {}})
    workspace = ANY_VOLUME
    target = KubernetesTargets(cluster.api_client, SETTINGS)(PvcTarget(namespace=NS, name="taken"), [workspace])

    with pytest.raises(PermanentError, match=f"PVC {NS}/taken already exists"):
        await target.claim()
    await target.discard()
    assert "taken" in _objects(cluster, "persistentvolumeclaims")


async def test_without_a_running_snapshotter_the_restore_waits_for_one(fake_kube):
    workspace = ANY_VOLUME
    target = KubernetesTargets(fake_kube.api_client, SETTINGS)(PvcTarget(namespace=NS, name="v"), [workspace])

    with pytest.raises(TemporaryError, match="no snapshotter is running"):
        await target.claim()
    assert not _objects(fake_kube, "persistentvolumeclaims")


def test_without_a_cluster_there_are_no_kubernetes_targets(monkeypatch):
    monkeypatch.setenv("ROK_KUBE", "off")
    assert kubernetes_targets() is None


async def test_a_retried_clone_task_finds_its_clone_made_and_anything_else_is_still_refused(cluster, stored, tmp_path):
    """A create-volume task retried after its clone was made (its pod lost after the restore): the run's clone,
    restored by rok from the same snapshot, is the request done, untouched even by a discard of the retry (its
    redelivery after an interruption); another run's PVC, or one restored from another snapshot, of the same name
    is refused as any existing PVC is."""
    workspace, data = stored["volumes"]
    clone = PvcTarget(namespace=NS, name="ws-run-7f3a0c9e77b1", run_id="7f3a0c9e-77b1")
    targets = KubernetesTargets(cluster.api_client, SETTINGS)
    with running(cluster, tmp_path / "node").running() as kube:
        await _restore_all(targets(clone, [workspace]), [workspace])
        made = _objects(cluster, "persistentvolumeclaims")["ws-run-7f3a0c9e77b1"]
        assert made["metadata"]["labels"]["rok.kubeflow.org/run"] == "7f3a0c9e-77b1"
        ran = len(kube.kubelet.ran)

        retried = targets(clone, [workspace])
        (again,) = await _restore_all(retried, [workspace])
        assert (again.location, again.snapshot_id, again.files) == (
            f"{NS}/ws-run-7f3a0c9e77b1",
            workspace.snapshot_id,
            0,
        )
        assert len(kube.kubelet.ran) == ran  # no restore pod: nothing was written
        await retried.discard()  # even a discard of the retry leaves the run's clone alone
        assert (
            _objects(cluster, "persistentvolumeclaims")["ws-run-7f3a0c9e77b1"]["metadata"]["uid"]
            == made["metadata"]["uid"]
        )
        assert same_tree(stored["sources"]["workspace"], kube.claim_directory(NS, "ws-run-7f3a0c9e77b1"))

        other_run = PvcTarget(namespace=NS, name="ws-run-7f3a0c9e77b1", run_id="another-run")
        no_run = PvcTarget(namespace=NS, name="ws-run-7f3a0c9e77b1")
        for model, volume in ((other_run, workspace), (no_run, workspace), (clone, data)):
            target = targets(model, [volume])
            with pytest.raises(PermanentError, match=f"PVC {NS}/ws-run-7f3a0c9e77b1 already exists"):
                await target.claim()
        assert (
            _objects(cluster, "persistentvolumeclaims")["ws-run-7f3a0c9e77b1"]["metadata"]["uid"]
            == made["metadata"]["uid"]
        )


async def test_a_restore_pod_that_never_ends_is_given_up_after_the_timeout_and_removed(cluster, stored):
    """No kubelet runs it: the pod never starts, the restorer waits the restore pod timeout, says so (a temporary
    failure: the request is retried), and removes the pod."""
    workspace = stored["volumes"][0]
    settings = KubernetesSettings(
        kube="incluster", restore_image="rok/restorer:9.9", restore_poll_interval=0.05, restore_pod_timeout=0.3
    )
    target = KubernetesTargets(cluster.api_client, settings)(PvcTarget(namespace=NS, name="never"), [workspace])
    await target.claim()
    with pytest.raises(TemporaryError, match=r"rok-restore-never failed: did not finish within 0s \(phase \w+\)"):
        await target.restore_volume(workspace, None)
    assert "rok-restore-never" not in _objects(cluster, "pods")
    await target.discard()
    assert not _objects(cluster, "persistentvolumeclaims")
