"""Off a cluster a volume is a directory under the configured roots, reached by a plain path; the kubelet's
paths are built only from single path components, and never through a symlink."""

from __future__ import annotations

from pathlib import Path

import pytest
from rok_snapshotter.settings import SnapshotterSettings
from rok_snapshotter.volumes import LocalVolumes, VolumeNotFound, VolumeRefused, kubelet_mount
from rokcommon.events import RunRef, VolumeRef

UID = "0f3c2e9a-8a53-4d7e-9d0c-2b1f6a1c9e11"
RUN = RunRef(namespace="local", run_id="run-1", workflow_uid="wf-1")


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    (root / "notebook" / "workspace").mkdir(parents=True)
    (root / "notebook" / "workspace" / "train.py").write_text("print('train')\n")
    return root


async def locate(path: str | Path, *roots: Path) -> Path:
    return await LocalVolumes(roots).locate(VolumeRef(name="data", path=str(path)), RUN, None)


async def test_a_local_volume_is_the_directory_the_event_names_under_a_root(roots: Path) -> None:
    assert await locate(roots / "notebook" / "workspace", roots) == roots / "notebook" / "workspace"


async def test_a_path_is_normalised_before_it_is_judged(roots: Path) -> None:
    assert await locate(f"{roots}//notebook/./workspace/", roots) == roots / "notebook" / "workspace"


async def test_a_directory_outside_the_roots_is_refused_naming_them(tmp_path: Path, roots: Path) -> None:
    (tmp_path / "secret-outside").mkdir()
    with pytest.raises(VolumeRefused, match=r"secret-outside is not in ROK_VOLUME_ROOTS \(.*/home\)"):
        await locate(tmp_path / "secret-outside", roots)


async def test_a_path_that_climbs_with_dot_dot_is_refused_even_when_it_lands_in_a_root(roots: Path) -> None:
    with pytest.raises(VolumeRefused, match=r"climbs with '\.\.'"):
        await locate(f"{roots}/notebook/workspace/../workspace", roots)
    with pytest.raises(VolumeRefused, match=r"climbs with '\.\.'"):
        await locate(f"{roots}/notebook/workspace/../../../secret-outside", roots)


async def test_a_symlink_in_a_root_leading_out_of_it_is_refused(tmp_path: Path, roots: Path) -> None:
    (tmp_path / "secret-outside").mkdir()
    (roots / "notebook" / "link").symlink_to(tmp_path / "secret-outside")
    with pytest.raises(VolumeRefused, match=r"link \(which leads to .*/secret-outside\) is not in ROK_VOLUME_ROOTS"):
        await locate(roots / "notebook" / "link", roots)


async def test_a_symlink_staying_in_a_root_is_followed(roots: Path) -> None:
    (roots / "ws").symlink_to(roots / "notebook" / "workspace")
    assert await locate(roots / "ws", roots) == roots / "notebook" / "workspace"


async def test_nothing_is_read_by_path_without_roots(roots: Path) -> None:
    with pytest.raises(VolumeRefused, match=r"no directory may be read by path here \(ROK_VOLUME_ROOTS is empty\)"):
        await locate(roots / "notebook" / "workspace")


async def test_a_missing_directory_in_a_root_is_a_permanent_error_naming_it(roots: Path) -> None:
    with pytest.raises(VolumeNotFound, match=r"volume 'data': directory .*/gone does not exist"):
        await locate(roots / "gone", roots)


async def test_a_file_is_not_a_volume(roots: Path) -> None:
    with pytest.raises(VolumeNotFound, match="is not a directory"):
        await locate(roots / "notebook" / "workspace" / "train.py", roots)


async def test_a_pod_volume_is_refused_off_a_cluster(roots: Path) -> None:
    volume = VolumeRef(name="data", pod_uid=UID, pod_name="step-0", pod_volume="data", pvc="data")
    with pytest.raises(VolumeRefused, match=r"names pod 'step-0', and this snapshotter is not in a cluster"):
        await LocalVolumes([roots]).locate(volume, RUN, None)


def test_the_roots_are_the_home_directory_or_the_configured_ones_and_always_the_state_directory(
    tmp_path: Path,
) -> None:
    assert SnapshotterSettings(state_dir=tmp_path).roots == (Path.home(), tmp_path)
    assert SnapshotterSettings(state_dir=tmp_path, volume_roots="/data:/srv/nb").roots == (
        Path("/data"),
        Path("/srv/nb"),
        tmp_path,
    )
    with pytest.raises(ValueError, match="ROK_VOLUME_ROOTS must list absolute directories, got data"):
        SnapshotterSettings(volume_roots="/srv:data")


def test_in_a_cluster_only_the_configured_roots_hold_host_paths(tmp_path: Path) -> None:
    assert SnapshotterSettings(state_dir=tmp_path, kube="incluster").roots == ()
    assert SnapshotterSettings(state_dir=tmp_path, kube="incluster", volume_roots="/mnt/local-path").roots == (
        Path("/mnt/local-path"),
    )


@pytest.mark.parametrize(
    ("uid", "plugin", "pv"),
    [("..", "kubernetes.io~csi", "pv-1"), (UID, "../..", "pv-1"), (UID, "kubernetes.io~csi", "../x"), (UID, "a", "")],
    ids=["pod-uid", "plugin", "pv", "empty"],
)
def test_names_that_would_climb_out_of_the_pods_directory_are_refused(
    tmp_path: Path, uid: str, plugin: str, pv: str
) -> None:
    with pytest.raises(VolumeRefused, match="not a single path component"):
        kubelet_mount(VolumeRef(name="data", path="/x"), tmp_path, uid, plugin, pv)


def test_a_kubelet_directory_reached_through_a_symlinked_pods_directory_is_read(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "kubelet" / "pods"
    (real / UID / "volumes" / "kubernetes.io~nfs" / "pv-1").mkdir(parents=True)
    (tmp_path / "pods").symlink_to(real)  # /var/lib/kubelet on another disk
    found = kubelet_mount(VolumeRef(name="data", path="/x"), tmp_path / "pods", UID, "kubernetes.io~nfs", "pv-1")
    assert found == real / UID / "volumes" / "kubernetes.io~nfs" / "pv-1"
