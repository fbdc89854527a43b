"""In a cluster a volume is read only as the claim the named pod of the run mounts on this node, where the
kubelet mounted it: checked with the Kubernetes API (the fake one, holding a real run's objects)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_helpers import LOCAL_PV, NODE, NOTEBOOK_WS_PV, WS_PV, Cluster, another_runs_pod, make_cluster
from rok_snapshotter.kube import ClusterVolumes
from rok_snapshotter.volumes import UnsupportedVolume, VolumeNotFound, VolumeRefused
from rokcommon.events import RunRef
from roktesting.kubernetes import FakeKube

CSI = "kubernetes.io~csi"


@pytest.fixture
def cluster(fake_kube: FakeKube, tmp_path: Path) -> Cluster:
    return make_cluster(fake_kube, tmp_path / "kubelet" / "pods")


@pytest.fixture
def volumes(cluster: Cluster) -> ClusterVolumes:
    return ClusterVolumes(cluster.kube.api_client, node=NODE, pods_dir=cluster.pods_dir)


async def test_a_step_pods_csi_claim_is_its_mount_directory_under_the_pods_uid(
    cluster: Cluster, volumes: ClusterVolumes
) -> None:
    mount = cluster.mount("make-data", CSI, WS_PV)
    volume = cluster.volume("make-data", "pvc-ws", pv=WS_PV)
    assert await volumes.locate(volume, cluster.run, cluster.step("make-data")) == mount


async def test_a_local_pv_is_the_local_volume_plugins_directory(cluster: Cluster, volumes: ClusterVolumes) -> None:
    disk = cluster.mount("make-data", "kubernetes.io~local-volume", LOCAL_PV)
    volume = cluster.volume("make-data", "pvc-data", role="data")
    assert await volumes.locate(volume, cluster.run, cluster.step("make-data")) == disk


async def test_the_notebook_pod_the_workflow_names_is_read_for_the_initial_snapshot(
    cluster: Cluster, volumes: ClusterVolumes
) -> None:
    mount = cluster.mount("notebook", CSI, NOTEBOOK_WS_PV)
    volume = cluster.volume("notebook", "workspace-nb-1")
    assert await volumes.locate(volume, cluster.run, None) == mount
    # the workflow names it: the run's pods are not listed (they are only where the workflow names none)
    assert not [r for r in cluster.kube.requests if r.path.endswith(f"/namespaces/{cluster.run.namespace}/pods")]


async def test_the_notebook_pod_is_not_a_step_of_the_run(cluster: Cluster, volumes: ClusterVolumes) -> None:
    cluster.mount("notebook", CSI, NOTEBOOK_WS_PV)
    volume = cluster.volume("notebook", "workspace-nb-1")
    with pytest.raises(VolumeRefused, match="is not a pod of run"):
        await volumes.locate(volume, cluster.run, cluster.step("make-data"))


async def test_a_notebook_pod_the_workflow_does_not_name_is_refused(
    cluster: Cluster, volumes: ClusterVolumes, fake_kube: FakeKube
) -> None:
    cluster.mount("notebook", CSI, NOTEBOOK_WS_PV)
    fake_kube.patch(
        f"/apis/argoproj.io/v1alpha1/namespaces/{cluster.run.namespace}/workflows/ml-pipeline-8xfss",
        {"metadata": {"annotations": {"rok/notebook-pod": "someone-elses-notebook-0"}}},
    )
    with pytest.raises(VolumeRefused, match=r"nor the notebook pod its workflow names \(someone-elses-notebook-0\)"):
        await volumes.locate(cluster.volume("notebook", "workspace-nb-1"), cluster.run, None)


async def test_the_notebook_pod_a_clone_task_of_the_run_names_is_read_and_another_runs_pod_cannot_name_it(
    cluster: Cluster, volumes: ClusterVolumes, fake_kube: FakeKube
) -> None:
    """A run compiled with the KFP SDK: its workflow names no notebook pod, its create-volume task's pod does."""
    mount = cluster.mount("notebook", CSI, NOTEBOOK_WS_PV)
    namespace, notebook = cluster.run.namespace, cluster.pods["notebook"]["metadata"]["name"]
    fake_kube.patch(
        f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflows/ml-pipeline-8xfss",
        {"metadata": {"annotations": {"rok/notebook-pod": None}}},
    )
    volume = cluster.volume("notebook", "workspace-nb-1")
    other = another_runs_pod(cluster)  # another run's pod naming this notebook does not make it this run's
    fake_kube.patch(
        f"/api/v1/namespaces/{namespace}/pods/{other['metadata']['name']}",
        {"metadata": {"labels": {"pipeline/runid": cluster.run.run_id}, "annotations": {"rok/notebook-pod": notebook}}},
    )
    with pytest.raises(VolumeRefused, match=r"workflow names \(none\) nor one its pods name \(none\)"):
        await volumes.locate(volume, cluster.run, None)

    clone_task = cluster.pods["make-data"]["metadata"]["name"]
    fake_kube.patch(
        f"/api/v1/namespaces/{namespace}/pods/{clone_task}",
        {"metadata": {"annotations": {"rok/notebook-pod": notebook}}},
    )
    assert await volumes.locate(volume, cluster.run, None) == mount


async def test_a_forged_event_naming_another_pods_uid_is_refused(cluster: Cluster, volumes: ClusterVolumes) -> None:
    other = another_runs_pod(cluster)
    cluster.mount("other-run", CSI, WS_PV)
    volume = cluster.volume("make-data", "pvc-ws", pod_uid=other["metadata"]["uid"])
    with pytest.raises(VolumeRefused, match=f"has uid {cluster.uid('make-data')}, not {other['metadata']['uid']}"):
        await volumes.locate(volume, cluster.run, cluster.step("make-data"))


async def test_a_pod_on_another_node_is_refused(cluster: Cluster, volumes: ClusterVolumes) -> None:
    cluster.mount("train", CSI, WS_PV)  # even if its directory were here
    with pytest.raises(VolumeRefused, match=f"runs on node ip-10-0-2-33.ec2.internal, not on this node {NODE}"):
        await volumes.locate(cluster.volume("train", "pvc-ws"), cluster.run, cluster.step("train"))


async def test_a_pod_of_another_run_is_refused(cluster: Cluster, volumes: ClusterVolumes) -> None:
    another_runs_pod(cluster)
    cluster.mount("other-run", CSI, WS_PV)
    with pytest.raises(VolumeRefused, match=f"is not a pod of run {cluster.run.run_id}"):
        await volumes.locate(cluster.volume("other-run", "pvc-ws"), cluster.run, cluster.step("make-data"))


async def test_a_pod_of_the_run_that_runs_another_step_is_refused(cluster: Cluster, volumes: ClusterVolumes) -> None:
    cluster.mount("make-data", CSI, WS_PV)
    with pytest.raises(VolumeRefused, match=f"not step {cluster.step('train').step_id}"):
        await volumes.locate(cluster.volume("make-data", "pvc-ws"), cluster.run, cluster.step("train"))


async def test_a_claim_the_pod_does_not_mount_is_refused(cluster: Cluster, volumes: ClusterVolumes) -> None:
    cluster.mount("make-data", CSI, NOTEBOOK_WS_PV)
    volume = cluster.volume("make-data", "pvc-ws", pvc="workspace-nb-1")  # the notebook's own claim
    with pytest.raises(
        VolumeRefused, match="mounts claim ws-nb-1-run-8xfss as its volume pvc-ws, not claim workspace-nb-1"
    ):
        await volumes.locate(volume, cluster.run, cluster.step("make-data"))


async def test_a_pv_the_claim_is_not_bound_to_is_refused(cluster: Cluster, volumes: ClusterVolumes) -> None:
    cluster.mount("make-data", CSI, NOTEBOOK_WS_PV)
    volume = cluster.volume("make-data", "pvc-ws", pv=NOTEBOOK_WS_PV)
    with pytest.raises(VolumeRefused, match=f"is bound to {WS_PV}, not {NOTEBOOK_WS_PV}"):
        await volumes.locate(volume, cluster.run, cluster.step("make-data"))


async def test_a_pod_that_does_not_exist_in_the_runs_namespace_is_refused(
    cluster: Cluster, volumes: ClusterVolumes
) -> None:
    cluster.mount("make-data", CSI, WS_PV)
    elsewhere = RunRef(namespace="team-b", run_id=cluster.run.run_id, workflow_uid=cluster.run.workflow_uid)
    with pytest.raises(
        VolumeRefused, match="pod team-b/ml-pipeline-8xfss-system-container-impl-579787280 does not exist"
    ):
        await volumes.locate(cluster.volume("make-data", "pvc-ws"), elsewhere, cluster.step("make-data"))


@pytest.mark.parametrize("field", ["pod_name", "pod_uid", "pod_volume", "pvc"])
async def test_a_volume_given_by_path_or_without_its_pod_is_refused(
    cluster: Cluster, volumes: ClusterVolumes, field: str
) -> None:
    volume = cluster.volume("make-data", "pvc-ws", path="/var/lib/kubelet/pods", **{field: None})
    with pytest.raises(VolumeRefused, match=f"lacks {field}: in a cluster"):
        await volumes.locate(volume, cluster.run, cluster.step("make-data"))


async def test_a_symlink_in_the_kubelets_directory_leading_out_of_it_is_refused(
    cluster: Cluster, volumes: ClusterVolumes, tmp_path: Path
) -> None:
    secret = tmp_path / "secret-outside"
    secret.mkdir()
    (secret / "key").write_text("s3cr3t")
    volume_dir = cluster.pods_dir / cluster.uid("make-data") / "volumes" / CSI / WS_PV
    volume_dir.mkdir(parents=True)
    (volume_dir / "mount").symlink_to(secret)
    with pytest.raises(VolumeRefused, match="through a symlink"):
        await volumes.locate(cluster.volume("make-data", "pvc-ws"), cluster.run, cluster.step("make-data"))


async def test_a_verified_volume_that_is_not_mounted_here_is_not_found(
    cluster: Cluster, volumes: ClusterVolumes
) -> None:
    with pytest.raises(VolumeNotFound, match=f"no directory .*/{cluster.uid('make-data')}/volumes/{CSI}/{WS_PV}/mount"):
        await volumes.locate(cluster.volume("make-data", "pvc-ws"), cluster.run, cluster.step("make-data"))


async def test_a_pv_of_a_kind_the_snapshotter_cannot_read_is_unsupported(
    cluster: Cluster, volumes: ClusterVolumes, fake_kube: FakeKube
) -> None:
    fake_kube.patch(
        f"/api/v1/persistentvolumes/{WS_PV}",
        {"spec": {"csi": None, "iscsi": {"targetPortal": "10.0.0.5:3260", "iqn": "iqn.2024-05.example:ws", "lun": 0}}},
    )
    with pytest.raises(UnsupportedVolume, match=f"PV {WS_PV} is of a kind the snapshotter does not read \\(iscsi\\)"):
        await volumes.locate(cluster.volume("make-data", "pvc-ws"), cluster.run, cluster.step("make-data"))


async def test_a_hostpath_pv_is_read_only_under_the_configured_roots(
    cluster: Cluster, fake_kube: FakeKube, tmp_path: Path
) -> None:
    host = tmp_path / "host" / "local-path-provisioner" / "pvc-ws"
    host.mkdir(parents=True)
    fake_kube.patch(f"/api/v1/persistentvolumes/{WS_PV}", {"spec": {"csi": None, "hostPath": {"path": str(host)}}})
    volume, step = cluster.volume("make-data", "pvc-ws"), cluster.step("make-data")
    nowhere = ClusterVolumes(fake_kube.api_client, node=NODE, pods_dir=cluster.pods_dir)
    with pytest.raises(VolumeRefused, match=f"hostPath PV {WS_PV} is {host}, and no directory may be read by path"):
        await nowhere.locate(volume, cluster.run, step)
    rooted = ClusterVolumes(fake_kube.api_client, node=NODE, pods_dir=cluster.pods_dir, roots=[host.parent])
    assert await rooted.locate(volume, cluster.run, step) == host
