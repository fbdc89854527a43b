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
