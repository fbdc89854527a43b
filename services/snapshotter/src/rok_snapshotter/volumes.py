"""Where a volume named in an event is on this node: a local directory, or the kubelet's pod volume path.

The kubelet mounts each volume of a pod at ``<pods dir>/<pod uid>/volumes/<plugin>/<volume dir>``, where
``<plugin>`` is the volume plugin's name with ``/`` written ``~`` (``kubernetes.io~csi``,
``kubernetes.io~empty-dir``, ``kubernetes.io~nfs`` …) and ``<volume dir>`` is the name of the volume's spec: the
PersistentVolume's name for a claim, the pod's volume name for an inline volume. A CSI volume's files are one
level further down, in ``…/kubernetes.io~csi/<volume dir>/mount`` (next to ``vol_data.json``). When the event
does not name the plugin, the pod's volumes directory is searched for the volume's directory.

Pure code: no broker, no store. Every way of not finding the volume is a :class:`VolumeNotFound`, which is
permanent: a path that does not exist now, or that leads outside the pods directory, will not be right later.
"""

from __future__ import annotations

from pathlib import Path

from rokcommon.errors import PermanentError
from rokcommon.events import VolumeRef

CSI_PLUGIN = "kubernetes.io~csi"


class VolumeNotFound(PermanentError):
    """The volume's directory is not on this node (or is not a directory, or lies outside the pods directory)."""


def locate(volume: VolumeRef, pods_dir: Path) -> Path:
    """The directory holding ``volume``'s files on this node."""
    if volume.pod_uid and volume.pod_volume:
        return kubelet_volume_path(volume, pods_dir)
    assert volume.path is not None  # VolumeRef guarantees a path or a pod uid and volume
    return _existing_directory(volume, Path(volume.path), hint="is the volume on this machine?")


def kubelet_volume_path(volume: VolumeRef, pods_dir: Path) -> Path:
    """The pod volume path the kubelet mounted ``volume`` at, under ``pods_dir``."""
    root = Path(pods_dir).absolute()
    uid = _component(volume, "pod_uid", volume.pod_uid or "")
    names = list(
        dict.fromkeys(_component(volume, f, n) for f, n in (("pv", volume.pv), ("pod_volume", volume.pod_volume)) if n)
    )
    pod_volumes = root / uid / "volumes"
    if volume.plugin:
        plugin = _component(volume, "plugin", volume.plugin.replace("/", "~"))
        candidates = [_mount_dir(pod_volumes / plugin / name, plugin) for name in names]
    else:
        candidates = _search(pod_volumes, names)
    hint = (
        f"is pod {uid} running on this node, and is ROK_KUBELET_PODS_DIR ({root}) the kubelet's pods directory "
        "as mounted into the snapshotter?"
    )
    for candidate in candidates:
        if candidate.is_dir():
            return _inside(volume, candidate, root)
    tried = ", ".join(str(c) for c in candidates) or f"{pod_volumes}/*/{{{','.join(names)}}}"
    raise VolumeNotFound(f"volume {volume.name!r} is not mounted on this node: no directory {tried}; {hint}")


def _search(pod_volumes: Path, names: list[str]) -> list[Path]:
    """Every ``<plugin>/<name>`` under a pod's volumes directory, CSI's ``mount`` sub-directory included."""
    try:
        plugins = sorted(p.name for p in pod_volumes.iterdir() if p.is_dir())
    except OSError:
        return []
    found = [_mount_dir(pod_volumes / plugin / name, plugin) for name in names for plugin in plugins]
    return [f for f in found if f.is_dir()]


def _mount_dir(volume_dir: Path, plugin: str) -> Path:
    return volume_dir / "mount" if plugin == CSI_PLUGIN else volume_dir


def _component(volume: VolumeRef, field: str, value: str) -> str:
    """A value that must be exactly one path component (no ``/``, not ``.`` or ``..``)."""
    if not value or "/" in value or "\0" in value or value in (".", ".."):
        raise VolumeNotFound(
            f"volume {volume.name!r} has {field} {value!r}, which is not a single path component; "
            "refusing to look outside the kubelet's pods directory"
        )
    return value


def _inside(volume: VolumeRef, path: Path, root: Path) -> Path:
    """``path`` with symlinks resolved, provided it stays under ``root``."""
    real, real_root = path.resolve(), root.resolve()
    if not real.is_relative_to(real_root):
        raise VolumeNotFound(
            f"volume {volume.name!r} resolves to {real}, outside the kubelet's pods directory {real_root}; "
            "refusing to snapshot it"
        )
    return real


def _existing_directory(volume: VolumeRef, path: Path, *, hint: str) -> Path:
    if not path.exists():
        raise VolumeNotFound(f"volume {volume.name!r}: directory {path} does not exist; {hint}")
    if not path.is_dir():
        raise VolumeNotFound(f"volume {volume.name!r}: {path} is not a directory; a volume must be a directory")
    return path
