"""A cluster for the snapshotter's tests: a KFP v2 run's objects in the fake Kubernetes API (fixtures/
cluster_objects.json, from real objects) and the kubelet's pods directory of this node in a temporary directory."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rokcommon.events import RunRef, StepRef, VolumeRef
from roktesting.kubernetes import FakeKube

OBJECTS = json.loads((Path(__file__).parent / "fixtures" / "cluster_objects.json").read_text())
NAMESPACE = "kubeflow-user-example-com"
NODE = "ip-10-0-1-17.ec2.internal"  # where make-data and the notebook run; train runs on ip-10-0-2-33
RUN_ID = "55357e95-7b14-4cb8-b5f2-f669403832b9"
PODS = {
    "make-data": "ml-pipeline-8xfss-system-container-impl-579787280",
    "train": "ml-pipeline-8xfss-system-container-impl-1220650009",
    "notebook": "nb-1-0",
}
WS_PV = "pvc-5b6f0c7e-1d2a-4e3b-8c9d-0a1b2c3d4e01"
NOTEBOOK_WS_PV = "pvc-5b6f0c7e-1d2a-4e3b-8c9d-0a1b2c3d4e03"
LOCAL_PV = "kubeflow-local-pv"


@dataclass
class Cluster:
    kube: FakeKube
    pods_dir: Path
    run: RunRef
    pods: dict[str, dict[str, Any]]  # as created, by task ("make-data", "train") or "notebook"

    def uid(self, pod: str) -> str:
        return str(self.pods[pod]["metadata"]["uid"])

    def step(self, pod: str = "make-data") -> StepRef:
        node_id = self.pods[pod]["metadata"]["annotations"]["workflows.argoproj.io/node-id"]
        return StepRef(run=self.run, step_id=node_id, name=pod)

    def volume(self, pod: str, mounted_as: str, **changes: Any) -> VolumeRef:
        """The volume as the watcher names it: the claim ``pod`` mounts as its volume ``mounted_as``."""
        obj = self.pods[pod]
        (claim,) = [v["persistentVolumeClaim"]["claimName"] for v in obj["spec"]["volumes"] if v["name"] == mounted_as]
        fields: dict[str, Any] = {
            "name": claim,
            "role": "workspace",
            "pvc": claim,
            "pod_uid": obj["metadata"]["uid"],
            "pod_name": obj["metadata"]["name"],
            "pod_volume": mounted_as,
        }
        return VolumeRef(**(fields | changes))

    def mount(self, pod: str, plugin: str, pv: str, files: dict[str, bytes] | None = None) -> Path:
        """The directory the kubelet mounts ``pv`` at for ``pod``, with ``files`` in it."""
        where = self.pods_dir / self.uid(pod) / "volumes" / plugin / pv
        if plugin == "kubernetes.io~csi":
            where.mkdir(parents=True)
            (where / "vol_data.json").write_text(json.dumps({"driver": "ebs.csi.aws.com", "specVolID": pv}))
            where = where / "mount"
        where.mkdir(parents=True)
        for name, content in (files or {"data.csv": b"a,b\n1,2\n"}).items():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            (where / name).write_bytes(content)
        return where


def make_cluster(kube: FakeKube, pods_dir: Path) -> Cluster:
    """The run's workflow, pods, claims and PVs in ``kube`` (uids as the server gives them, owners pointing at
    the workflow it created), and an empty kubelet pods directory."""
    workflow = kube.create(f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/workflows", OBJECTS["workflow"])
    workflow_uid = workflow["metadata"]["uid"]
    pods: dict[str, dict[str, Any]] = {}
    for obj in OBJECTS["pods"]:
        obj = copy.deepcopy(obj)
        for owner in obj["metadata"].get("ownerReferences") or ():
            if owner["kind"] == "Workflow":
                owner["uid"] = workflow_uid
        created = kube.create(f"/api/v1/namespaces/{NAMESPACE}/pods", obj)
        pods[next(k for k, name in PODS.items() if name == created["metadata"]["name"])] = created
    for claim in OBJECTS["claims"]:
        kube.create(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims", claim)
    for pv in OBJECTS["volumes"]:
        kube.create("/api/v1/persistentvolumes", pv)
    pods_dir.mkdir(parents=True, exist_ok=True)
    run = RunRef(namespace=NAMESPACE, run_id=RUN_ID, workflow_uid=workflow_uid)
    return Cluster(kube, pods_dir, run, pods)


def another_runs_pod(cluster: Cluster) -> dict[str, Any]:
    """A step pod of another run (another workflow, same namespace, this node), mounting the same claims."""
    obj = copy.deepcopy(OBJECTS["pods"][0])
    obj["metadata"]["name"] = "other-run-system-container-impl-1"
    obj["metadata"]["labels"]["pipeline/runid"] = "6a1f0000-0000-4000-8000-000000000000"
    obj["metadata"]["labels"]["workflows.argoproj.io/workflow"] = "other-run"
    obj["metadata"]["ownerReferences"][0] |= {"name": "other-run", "uid": "7b2e0000-0000-4000-8000-000000000000"}
    created = cluster.kube.create(f"/api/v1/namespaces/{NAMESPACE}/pods", obj)
    cluster.pods["other-run"] = created
    return created
