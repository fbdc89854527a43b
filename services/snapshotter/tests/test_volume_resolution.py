"""Where a volume named in an event is found on this node: a local directory or the kubelet's pod volume path."""

from __future__ import annotations

from pathlib import Path

import pytest
from rok_snapshotter.volumes import VolumeNotFound, locate
from rokcommon.events import VolumeRef

UID = "0f3c2e9a-8a53-4d7e-9d0c-2b1f6a1c9e11"


@pytest.fixture
def pods(tmp_path: Path) -> Path:
    root = tmp_path / "kubelet" / "pods"
    root.mkdir(parents=True)
    return root


def mounted(pods: Path, *parts: str) -> Path:
    path = pods.joinpath(UID, "volumes", *parts)
    path.mkdir(parents=True)
    (path / "data.csv").write_text("a,b\n")
    return path


def test_a_local_volume_is_the_directory_the_event_names(tmp_path: Path, pods: Path) -> None:
    (tmp_path / "workspace").mkdir()
    volume = VolumeRef(name="workspace", role="workspace", path=str(tmp_path / "workspace"))
    assert locate(volume, pods) == tmp_path / "workspace"


def test_a_missing_local_directory_is_a_permanent_error_naming_it(tmp_path: Path, pods: Path) -> None:
    volume = VolumeRef(name="data", path=str(tmp_path / "gone"))
    with pytest.raises(VolumeNotFound, match=r"volume 'data': directory .*/gone does not exist"):
        locate(volume, pods)


def test_a_local_file_is_not_a_volume(tmp_path: Path, pods: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(VolumeNotFound, match="is not a directory"):
        locate(VolumeRef(name="data", path=str(tmp_path / "file")), pods)


def test_a_csi_volume_is_the_mount_directory_under_its_persistent_volume_name(pods: Path) -> None:
    mount = mounted(pods, "kubernetes.io~csi", "pvc-8d1f", "mount")
    volume = VolumeRef(
        name="workspace", pvc="ws", pv="pvc-8d1f", pod_uid=UID, pod_volume="workspace", plugin="kubernetes.io~csi"
    )
    assert locate(volume, pods) == mount


def test_a_plugin_written_with_a_slash_is_escaped_like_the_kubelet_does(pods: Path) -> None:
    mount = mounted(pods, "kubernetes.io~csi", "pvc-8d1f", "mount")
    volume = VolumeRef(name="ws", pv="pvc-8d1f", pod_uid=UID, pod_volume="ws", plugin="kubernetes.io/csi")
    assert locate(volume, pods) == mount


def test_a_non_csi_volume_is_the_directory_under_its_pod_volume_name(pods: Path) -> None:
    scratch = mounted(pods, "kubernetes.io~empty-dir", "scratch")
    volume = VolumeRef(name="scratch", pod_uid=UID, pod_volume="scratch", plugin="kubernetes.io~empty-dir")
    assert locate(volume, pods) == scratch


def test_an_in_tree_persistent_volume_is_found_under_its_persistent_volume_name(pods: Path) -> None:
    disk = mounted(pods, "kubernetes.io~local-volume", "local-pv-1")
    volume = VolumeRef(
        name="data", pv="local-pv-1", pod_uid=UID, pod_volume="data", plugin="kubernetes.io~local-volume"
    )
    assert locate(volume, pods) == disk


def test_an_unknown_plugin_is_found_by_searching_the_pods_volumes(pods: Path) -> None:
    mounted(pods, "kubernetes.io~configmap", "settings")
    mount = mounted(pods, "kubernetes.io~csi", "pvc-77aa", "mount")
    volume = VolumeRef(name="data", pvc="data", pv="pvc-77aa", pod_uid=UID, pod_volume="data")
    assert locate(volume, pods) == mount


def test_an_unknown_plugin_without_a_persistent_volume_is_found_by_pod_volume_name(pods: Path) -> None:
    nfs = mounted(pods, "kubernetes.io~nfs", "shared")
    assert locate(VolumeRef(name="shared", pod_uid=UID, pod_volume="shared"), pods) == nfs


def test_a_volume_not_mounted_on_this_node_is_a_permanent_error_saying_where_it_looked(pods: Path) -> None:
    mounted(pods, "kubernetes.io~csi", "pvc-other", "mount")
    volume = VolumeRef(name="data", pv="pvc-77aa", pod_uid=UID, pod_volume="data", plugin="kubernetes.io~csi")
    with pytest.raises(VolumeNotFound) as caught:
        locate(volume, pods)
    message = str(caught.value)
    assert f"{UID}/volumes/kubernetes.io~csi/pvc-77aa/mount" in message
    assert "ROK_KUBELET_PODS_DIR" in message


def test_a_pod_that_is_not_on_this_node_is_a_permanent_error(pods: Path) -> None:
    with pytest.raises(VolumeNotFound, match=f"is pod {UID} running on this node"):
        locate(VolumeRef(name="data", pod_uid=UID, pod_volume="data"), pods)


@pytest.mark.parametrize(
    "fields",
    [
        {"pod_uid": "..", "pod_volume": "data"},
        {"pod_uid": UID, "pod_volume": "../../../etc"},
        {"pod_uid": UID, "pod_volume": "data", "plugin": ".."},
        {"pod_uid": UID, "pod_volume": "data", "pv": "../x"},
    ],
    ids=["pod-uid", "pod-volume", "plugin", "pv"],
)
def test_names_that_would_climb_out_of_the_pods_directory_are_refused(pods: Path, fields: dict[str, str]) -> None:
    with pytest.raises(VolumeNotFound, match="not a single path component"):
        locate(VolumeRef(name="data", **fields), pods)


def test_a_symlink_leading_out_of_the_pods_directory_is_refused(tmp_path: Path, pods: Path) -> None:
    outside = tmp_path / "secrets"
    outside.mkdir()
    plugin_dir = pods / UID / "volumes" / "kubernetes.io~empty-dir"
    plugin_dir.mkdir(parents=True)
    (plugin_dir / "data").symlink_to(outside)
    volume = VolumeRef(name="data", pod_uid=UID, pod_volume="data", plugin="kubernetes.io~empty-dir")
    with pytest.raises(VolumeNotFound, match="outside the kubelet's pods directory"):
        locate(volume, pods)
