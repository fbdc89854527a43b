"""The cluster flow, the way the cluster behaves: a notebook server's volumes snapshotted when the run starts, the
run's clones of them made by its create-volume-N tasks' restores (PVCs of the run, labelled with it, filled and
bound before the steps mount them), its steps' versions in a real S3 store, then a notebook restore of a middle
step through the restorer, into the fake API server with its volumes binding, its kubelet running the restore
pods' own store restore for real and its notebook controller starting the new server — every object checked field
by field against the API's schemas and the Notebook CRD's, and the new server the one the run came from again.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rok_restorer.kubernetes import KubernetesSettings, KubernetesTargets
from rok_restorer.restoring import Record, Restorer
from rok_restorer.targets import Targets
from rokcli.clones import clone_name
from rokcommon.events import NotebookTarget, PvcTarget, RestoreCompleted, RestoreRequested
from rokcommon.notebooks import notebook_server
from rokcommon.registry_contract import Member, Resolved, Version
from rokcommon.urls import format_url
from rokstore import init_repository, snapshot
from roktesting.kubecluster import Cluster, schema_errors

from . import crds
from .trees import same_tree

NS = "kubeflow-user-example-com"
USER = "user@example.com"
BIN = Path(sys.executable).parent
IMAGE = "registry.example.com/team/jupyter-torch:2.3"
RESOURCES = {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}}
ENV = [
    {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.kubeflow:5000"},
    {"name": "PYTHONUNBUFFERED", "value": "1"},
]
# the notebook's volumes: its workspace (as the notebook form names it) and a data volume mounted where the user chose
NOTEBOOK_CLAIMS = {
    "my-notebook-workspace": ("/home/jovyan", "5Gi", "standard"),
    "datasets": ("/mnt/datasets", "20Gi", "nfs"),
}
RUN_ID = "7f3a0c9e-77b1-4d3e-9a4f-5b6c7d8e9f00"
# the run's clones of them, one per volume, the workspace first (create-volume-1, create-volume-2: rok clone-pvc)
CLONES = tuple(clone_name(claim, RUN_ID) for claim in NOTEBOOK_CLAIMS)


def _notebook_pod() -> dict[str, Any]:
    """The notebook server's pod as its controller made it (what the watcher records when the run starts)."""
    mounts = [{"name": f"vol-{i}", "mountPath": path} for i, (path, _, _) in enumerate(NOTEBOOK_CLAIMS.values())]
    volumes = [{"name": f"vol-{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(NOTEBOOK_CLAIMS)]
    return {
        "metadata": {
            "name": "my-notebook-0",
            "namespace": NS,
            "labels": {"notebook-name": "my-notebook", "app": "my-notebook"},
            "annotations": {"notebooks.kubeflow.org/server-type": "jupyter"},
        },
        "spec": {
            "serviceAccountName": "default-editor",
            "containers": [
                {"name": "my-notebook", "image": IMAGE, "env": ENV, "resources": RESOURCES, "volumeMounts": mounts},
                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22"},
            ],
            "volumes": volumes,
        },
    }


def _claim(name: str, size: str, storage_class: str, mode: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "accessModes": [mode],
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": size}},
        },
    }


def _state(root: Path, step: int) -> dict[str, Path]:
    """The run's two volumes after ``step`` steps (0: as the notebook had them)."""
    workspace, data = root / f"s{step}" / "workspace", root / f"s{step}" / "data"
    (workspace / ".rok").mkdir(parents=True)
    data.mkdir(parents=True)
    (workspace / "train.ipynb").write_text('{"cells": []}\n')
    (data / "raw.csv").write_bytes(b"x,y\n" + b"1,2\n" * 4000)
    if step >= 1:
        (data / "clean.parquet").write_bytes(os.urandom(20_000))
        (workspace / ".rok" / "prepare.pickle").write_bytes(b"prepared" * 100)
    if step >= 2:
        (workspace / "model.pt").write_bytes(os.urandom(50_000))
        (workspace / ".rok" / "train.pickle").write_bytes(b"trained" * 100)
    if step >= 3:
        (workspace / "report.md").write_text("accuracy 0.93\n")
    return {CLONES[0]: workspace, CLONES[1]: data}


class Catalog:
    """The registry's answers for the run (what it recorded from the run's events)."""

    def __init__(self) -> None:
        self.versions: dict[str, Resolved] = {}

    async def resolve(self, namespace: str, url: str) -> Resolved:
        return self.versions[url]


class Kept:
    def __init__(self) -> None:
        self.records: dict[str, Record] = {}

    async def get(self, key: str) -> Record | None:
        return self.records.get(key)

    async def put(self, key: str, record: Record) -> None:
        self.records[key] = record


@pytest.fixture
def kube(fake_kube):
    fake_kube.create(
        "/api/v1/namespaces/rok/pods",
        {
            "metadata": {"name": "rok-snapshotter-a", "labels": {"app.kubernetes.io/name": "rok-snapshotter"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "snapshotter", "image": "rok/snapshotter"}]},
            "status": {"phase": "Running"},
        },
    )
    return fake_kube


async def test_a_middle_step_comes_back_as_the_notebook_server_the_run_came_from(kube, s3_repo_url, tmp_path):
    # --- the run, as the registry recorded it -----------------------------------------------------------------
    claims = {}
    for (name, (_, size, storage_class)), mode in zip(
        NOTEBOOK_CLAIMS.items(), ("ReadWriteOnce", "ReadWriteMany"), strict=True
    ):
        claims[name] = kube.create(
            f"/api/v1/namespaces/{NS}/persistentvolumeclaims", _claim(name, size, storage_class, mode)
        )
    original = notebook_server(_notebook_pod(), claims)  # recorded when the run started
    catalog, states = Catalog(), {}
    async with await init_repository(s3_repo_url, cache_dir=tmp_path / "cache") as repo:
        for step, name in enumerate(("initial", "prepare", "train", "evaluate")):
            states[name] = _state(tmp_path / "run", step)
            # the initial version holds the notebook's volumes; the steps' versions, the run's clones of them
            names = tuple(NOTEBOOK_CLAIMS) if step == 0 else CLONES
            members = []
            for i, (volume, path) in enumerate(zip(names, states[name].values(), strict=True)):
                taken = await snapshot(repo, path)
                members.append(
                    Member(
                        volume=volume,
                        role="workspace" if i == 0 else "data",
                        snapshot_id=taken.snapshot_id,
                        repository=s3_repo_url,
                        size=taken.bytes_scanned,
                        url=format_url(NS, "exp-1", "run-7f3a", f"v{step}", volume),
                    )
                )
            url = format_url(NS, "exp-1", "run-7f3a", f"v{step}")
            version = Version(
                id=f"v{step}",
                url=url,
                namespace=NS,
                bucket="exp-1",
                file="run-7f3a",
                workflow_uid="wf-7f3a",
                run_id="run-7f3a",
                step_id=None if step == 0 else f"wf-7f3a-{step}",
                step_name=None if step == 0 else name,
                phase="initial" if step == 0 else "after",
                status="complete",
                volumes=names,
                members=tuple(members),
                notebook=original,
            )
            catalog.versions[url] = Resolved(url=url, version=version, members=tuple(members))
            for member in members:  # a volume's URL resolves to that one volume
                catalog.versions[member.url] = Resolved(url=member.url, version=version, members=(member,))
    middle = format_url(NS, "exp-1", "run-7f3a", "v2")  # after "train", the second of three steps

    # --- the restore ----------------------------------------------------------------------------------------------
    settings = KubernetesSettings(
        kube="incluster", restore_image="rok/restorer:9.9", restore_poll_interval=0.05, restore_pod_timeout=30
    )
    restorer = Restorer(catalog, Kept(), Targets(KubernetesTargets(kube.api_client, settings)))
    request = RestoreRequested.make(
        request_id="r-1",
        namespace=NS,
        url=middle,
        target=NotebookTarget(namespace=NS, name="back-to-train"),
        requested_by=USER,
    )
    cluster = Cluster(
        kube, tmp_path / "node", environment={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path)}, namespaces=(NS,)
    )
    with cluster.running():
        # create-volume-1, create-volume-2: each task's rok clone-pvc asks for its notebook volume of the initial
        # version as a new PVC of the run (the request it makes; tests/security/test_run_clones_in_the_cluster.py)
        for i, (claim, clone) in enumerate(zip(NOTEBOOK_CLAIMS, CLONES, strict=True)):
            cloned = await restorer.handle(
                RestoreRequested.make(
                    request_id=f"clone-{i}",
                    namespace=NS,
                    url=format_url(NS, "exp-1", "run-7f3a", "v0", claim),
                    target=PvcTarget(namespace=NS, name=clone, run_id=RUN_ID),
                    requested_by=f"system:serviceaccount:{NS}:default-editor",
                )
            )
            assert isinstance(cloned, RestoreCompleted), cloned
        for clone, (_, size, storage_class), mode in zip(
            CLONES, NOTEBOOK_CLAIMS.values(), ("ReadWriteOnce", "ReadWriteMany"), strict=True
        ):
            made_clone = kube.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{clone}")
            assert schema_errors(made_clone, "V1PersistentVolumeClaim") == [], clone
            assert made_clone["status"]["phase"] == "Bound"
            assert made_clone["metadata"]["labels"]["rok.kubeflow.org/run"] == RUN_ID  # retention follows it
            spec = made_clone["spec"]
            assert (spec["resources"]["requests"]["storage"], spec["accessModes"], spec["storageClassName"]) == (
                size,
                [mode],
                storage_class,
            )
            assert same_tree(states["initial"][clone], cluster.claim_directory(NS, clone)), clone

        outcome = await restorer.handle(request)
        assert isinstance(outcome, RestoreCompleted), outcome
        pod = _eventually(lambda: kube.get(f"/api/v1/namespaces/{NS}/pods/back-to-train-0"), "Running")

    # --- the new notebook server: the original again --------------------------------------------------------------
    notebook = kube.get(f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks/back-to-train")
    crds.validate(notebook)
    (container,) = notebook["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    assert container["resources"] == RESOURCES
    assert container["env"] == ENV
    assert container["volumeMounts"] == [
        {"name": "back-to-train-workspace", "mountPath": "/home/jovyan"},
        {"name": f"back-to-train-{CLONES[1]}", "mountPath": "/mnt/datasets"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    assert notebook["spec"]["template"]["spec"]["serviceAccountName"] == "default-editor"
    assert schema_errors(pod, "V1Pod") == []
    assert pod["status"]["phase"] == "Running"  # its claims were bound, and filled, before it could start
    assert pod["spec"]["containers"][0]["image"] == IMAGE

    # --- its claims: the originals' size, access mode and class; bound; holding the step's state -----------------
    expected = {
        "back-to-train-workspace": (CLONES[0], "5Gi", "ReadWriteOnce", "standard"),
        f"back-to-train-{CLONES[1]}": (CLONES[1], "20Gi", "ReadWriteMany", "nfs"),
    }
    made = {
        k[3]: o
        for k, o in kube.objects.items()
        if k[:3] == ("api/v1", "persistentvolumeclaims", NS) and k[3] not in (*NOTEBOOK_CLAIMS, *CLONES)
    }
    assert set(made) == set(expected)  # no staging claim is left
    for name, (volume, size, mode, storage_class) in expected.items():
        claim = made[name]
        assert schema_errors(claim, "V1PersistentVolumeClaim") == [], name
        assert claim["status"]["phase"] == "Bound"
        assert claim["spec"]["resources"]["requests"]["storage"] == size
        assert claim["spec"]["accessModes"] == [mode]
        assert claim["spec"]["storageClassName"] == storage_class
        assert same_tree(states["train"][volume], cluster.claim_directory(NS, name)), name
    assert not same_tree(states["evaluate"][CLONES[0]], cluster.claim_directory(NS, "back-to-train-workspace"))
    assert {r["pod"]["metadata"]["name"] for r in cluster.kubelet.ran.values() if r["code"] == 0} == {
        "rok-restore-back-to-train-workspace",
        f"rok-restore-back-to-train-{CLONES[1]}",
        *(f"rok-restore-{clone}" for clone in CLONES),
    }
    for run in cluster.kubelet.ran.values():
        if run["pod"]["metadata"]["name"].startswith("rok-restore-"):
            assert schema_errors(run["pod"], "V1Pod") == []
    assert not [k for k in kube.objects if k[1] == "pods" and k[3].startswith("rok-restore-")]  # all gone
    # the notebook's own claims are untouched
    for name in NOTEBOOK_CLAIMS:
        assert (
            kube.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{name}")["metadata"]["uid"]
            == claims[name]["metadata"]["uid"]
        )


def _eventually(read, phase: str, tries: int = 300) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for _ in range(tries):
        try:
            found = read()
        except Exception:
            found = {}
        if (found.get("status") or {}).get("phase") == phase:
            return found
        time.sleep(0.02)
    raise AssertionError(f"never {phase}: {found}")
