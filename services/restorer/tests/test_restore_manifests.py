"""The Kubernetes objects of a restore are built from the request alone, without a cluster."""

from __future__ import annotations

import pytest
from rok_restorer.manifests import (
    MANAGED_BY,
    claim_manifest,
    claim_names,
    credentials_secret_manifest,
    is_ours,
    notebook_manifest,
    restore_pod_manifest,
)
from rok_restorer.targets import VolumeToRestore
from rokcommon.errors import PermanentError
from rokcommon.events import NotebookTarget, PvcTarget
from rokcommon.notebooks import NotebookServer, NotebookVolume, notebook_server, quantity_bytes

NS = "kubeflow-user-example-com"
WORKSPACE = VolumeToRestore("Workspace", "snap-1", "s3://bucket/repo", size=3 * 1024**3)
DATA = VolumeToRestore("Training Data", "snap-2", "s3://bucket/repo", size=0)


def test_a_notebook_gets_its_workspace_claim_and_one_claim_per_data_volume_named_as_the_notebook_form_does():
    notebook = NotebookTarget(namespace=NS, name="nb-restored")

    claims = dict(zip(["Workspace", "Training Data"], claim_names(notebook, [WORKSPACE, DATA]), strict=True))
    manifest = notebook_manifest(notebook, [WORKSPACE, DATA], claims, "jupyter:default")

    assert claims == {"Workspace": "nb-restored-workspace", "Training Data": "nb-restored-training-data"}
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "jupyter:default"
    assert [(m["name"], m["mountPath"]) for m in container["volumeMounts"]] == [
        ("nb-restored-workspace", "/home/jovyan"),
        ("nb-restored-training-data", "/home/jovyan/training-data"),
        ("dshm", "/dev/shm"),
    ]
    assert is_ours(manifest["metadata"]["labels"])


def test_a_pvc_target_takes_exactly_one_volume():
    with pytest.raises(PermanentError, match="a PVC target takes one volume, and this request restores 2"):
        claim_names(PvcTarget(namespace=NS, name="restored"), [WORKSPACE, DATA])


def test_a_claim_is_sized_from_the_request_else_the_snapshot_with_headroom_else_the_default():
    pvc = PvcTarget(namespace=NS, name="restored", size="7Gi", storage_class="fast")
    notebook = NotebookTarget(namespace=NS, name="nb")

    assert claim_manifest(pvc, WORKSPACE, "restored", "10Gi")["spec"]["resources"]["requests"]["storage"] == "7Gi"
    assert claim_manifest(pvc, WORKSPACE, "restored", "10Gi")["spec"]["storageClassName"] == "fast"
    assert claim_manifest(notebook, WORKSPACE, "nb-ws", "10Gi")["spec"]["resources"]["requests"]["storage"] == "4Gi"
    assert claim_manifest(notebook, DATA, "nb-data", "10Gi")["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in claim_manifest(notebook, DATA, "nb-data", "10Gi")["spec"]


def test_the_restore_pod_runs_beside_a_snapshotter_and_reads_only_the_store_credentials_from_its_own_secret():
    pod = restore_pod_manifest(NS, WORKSPACE, "nb-ws", nodes=["node-a", "node-b"], image="rok:1", timeout=600)
    secret = credentials_secret_manifest(
        NS, pod["metadata"]["name"], "uid-1", {"AWS_ACCESS_KEY_ID": "id", "HOME": "/root", "AWS_REGION": ""}
    )

    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["node-a", "node-b"]
    assert pod["spec"]["activeDeadlineSeconds"] == 600
    assert pod["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "rok-restore-nb-ws"}}]
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "id"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert secret["metadata"]["labels"] == MANAGED_BY


# --- the notebook server the run came from ------------------------------------------------------------------

ORIGINAL = NotebookServer(
    name="my-notebook",
    namespace=NS,
    image="registry.example.com/team/jupyter-torch:2.3",
    resources={"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"nvidia.com/gpu": "1"}},
    env=({"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"},),
    volumes=(
        NotebookVolume(
            volume="my-notebook-ws",
            claim="my-notebook-ws",
            mount_path="/home/jovyan",
            size="5Gi",
            access_modes=("ReadWriteOnce",),
            storage_class="standard",
        ),
        NotebookVolume(
            volume="datasets",
            claim="datasets",
            mount_path="/mnt/datasets",
            size="100Gi",
            access_modes=("ReadWriteMany",),
            storage_class="nfs",
        ),
    ),
    service_account="default-editor",
    server_type="jupyter",
)
WS = VolumeToRestore("my-notebook-ws", "s1", "s3://b/r", size=6_000, original=ORIGINAL.volumes[0])
DATASETS = VolumeToRestore("datasets", "s2", "s3://b/r", size=99 * 1024**3, original=ORIGINAL.volumes[1])


def test_a_restored_notebook_server_is_the_original_again_image_resources_env_and_mount_paths():
    model = NotebookTarget(namespace=NS, name="back-again")
    claims = dict(zip([WS.name, DATASETS.name], claim_names(model, [WS, DATASETS]), strict=True))

    manifest = notebook_manifest(model, [WS, DATASETS], claims, "jupyter:default", ORIGINAL)

    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == ORIGINAL.image
    assert container["resources"] == ORIGINAL.resources
    assert container["env"] == [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}]
    assert [(m["name"], m["mountPath"]) for m in container["volumeMounts"]] == [
        ("back-again-workspace", "/home/jovyan"),
        ("back-again-datasets", "/mnt/datasets"),
        ("dshm", "/dev/shm"),
    ]
    assert pod["serviceAccountName"] == "default-editor"
    # an image the request names wins over the original's
    other = notebook_manifest(model.model_copy(update={"image": "mine:1"}), [WS], claims, "d", ORIGINAL)
    assert other["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:1"


def test_a_claim_takes_the_original_size_access_mode_and_class_unless_the_request_names_them():
    notebook = NotebookTarget(namespace=NS, name="nb", sizes={"datasets": "200Gi"})
    pvc = PvcTarget(namespace=NS, name="p", access_mode="ReadWriteOncePod", storage_class="fast")

    workspace = claim_manifest(notebook, WS, "nb-workspace", "10Gi")["spec"]
    datasets = claim_manifest(notebook, DATASETS, "nb-datasets", "10Gi")["spec"]
    asked = claim_manifest(pvc, DATASETS, "p", "10Gi")["spec"]

    # a 6 KB workspace gets its original 5Gi back, not a size guessed from its data
    assert workspace == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "5Gi"}},
        "storageClassName": "standard",
    }
    assert datasets["resources"]["requests"]["storage"] == "200Gi"
    assert datasets["accessModes"] == ["ReadWriteMany"] and datasets["storageClassName"] == "nfs"
    assert asked["accessModes"] == ["ReadWriteOncePod"] and asked["storageClassName"] == "fast"
    assert asked["resources"]["requests"]["storage"] == "100Gi"  # the original's, which the data fits in


def test_a_claim_is_never_smaller_than_the_data():
    grown = VolumeToRestore("datasets", "s2", "s3://b/r", size=120 * 1024**3, original=ORIGINAL.volumes[1])
    notebook = NotebookTarget(namespace=NS, name="nb")

    # the original claim (100Gi) no longer holds what the volume came to hold: the data's size with headroom
    assert claim_manifest(notebook, grown, "c", "10Gi")["spec"]["resources"]["requests"]["storage"] == "150Gi"
    with pytest.raises(PermanentError, match=r"a 50Gi PVC cannot hold volume 'datasets'.*at least 150Gi"):
        claim_manifest(PvcTarget(namespace=NS, name="p", size="50Gi"), grown, "p", "10Gi")


def test_a_size_is_read_as_kubernetes_reads_a_quantity():
    assert [quantity_bytes(q) for q in ("1Gi", "500Mi", "2G", "1.5Ki", "4096")] == [
        1024**3,
        500 * 1024**2,
        2 * 10**9,
        1536,
        4096,
    ]
    with pytest.raises(ValueError, match="'ten gigs' is not a Kubernetes quantity"):
        PvcTarget(namespace=NS, name="p", size="ten gigs")


def test_the_notebook_server_is_read_from_its_pod_and_claims_workspace_first():
    pod = {
        "metadata": {
            "name": "my-notebook-0",
            "namespace": NS,
            "labels": {"notebook-name": "my-notebook"},
            "annotations": {"notebooks.kubeflow.org/server-type": "jupyter"},
        },
        "spec": {
            "serviceAccountName": "default-editor",
            "containers": [
                {
                    "name": "my-notebook",
                    "image": ORIGINAL.image,
                    "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}],
                    "resources": ORIGINAL.resources,
                    "volumeMounts": [
                        {"name": "datasets", "mountPath": "/mnt/datasets"},
                        {"name": "ws", "mountPath": "/home/jovyan"},
                        {"name": "dshm", "mountPath": "/dev/shm"},
                    ],
                },
                {"name": "istio-proxy", "image": "istio/proxyv2"},
            ],
            "volumes": [
                {"name": "ws", "persistentVolumeClaim": {"claimName": "my-notebook-ws"}},
                {"name": "datasets", "persistentVolumeClaim": {"claimName": "datasets"}},
                {"name": "dshm", "emptyDir": {"medium": "Memory"}},
            ],
        },
    }
    claims = {
        v.claim: {
            "spec": {
                "accessModes": list(v.access_modes),
                "storageClassName": v.storage_class,
                "resources": {"requests": {"storage": v.size}},
            }
        }
        for v in ORIGINAL.volumes
    }

    assert notebook_server(pod, claims) == ORIGINAL


def test_a_runs_clone_carries_the_run_label_that_retention_follows_and_nothing_else_does():
    clone = claim_manifest(
        PvcTarget(namespace=NS, name="ws-run-7f3a", run_id="7f3a-b2"), WORKSPACE, "ws-run-7f3a", "1Gi"
    )
    assert clone["metadata"]["labels"]["rok.kubeflow.org/run"] == "7f3a-b2"
    plain = claim_manifest(PvcTarget(namespace=NS, name="restored"), WORKSPACE, "restored", "1Gi")
    assert "rok.kubeflow.org/run" not in plain["metadata"]["labels"]
    with pytest.raises(ValueError, match="run_id"):
        PvcTarget(namespace=NS, name="x", run_id="not a label value")
