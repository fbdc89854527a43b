"""Where a volume named in an event may be read on this node, by the rules that keep the snapshotter to its volumes.

Whoever can publish a run or step event names the volumes to read, so a name is never taken as it comes:

* **Off a cluster** (:class:`LocalVolumes`) a volume is a directory given by path. The path must be plain (no
  ``..``), and with its symlinks resolved it must lie in one of the configured roots (``ROK_VOLUME_ROOTS``: by
  default the home directory and the state directory, where ``rok run`` clones a run's volumes).
* **In a cluster** a volume is what the kubelet mounted for one pod, at
  ``<pods dir>/<pod uid>/volumes/<plugin>/<PV name>`` (a CSI volume's files one level down, in ``mount``), where
  ``<plugin>`` is the volume plugin's name with ``/`` written ``~`` (``kubernetes.io~csi``,
  ``kubernetes.io~local-volume``, ``kubernetes.io~nfs``). :func:`kubelet_mount` builds that path from values
  the Kubernetes API confirmed (:mod:`rok_snapshotter.pod_checks`, :mod:`rok_snapshotter.kube`), each one
  path component, and refuses it if a symlink anywhere below the pods directory leads elsewhere: the kubelet
  mounts at real directories.

Pure code: no broker, no Kubernetes client. The failures are permanent: :class:`VolumeRefused` (the event asks
for something this snapshotter may not read: nothing is announced for it, since the event is not to be trusted,
and it is dead-lettered with the reason); :class:`VolumeNotFound` and :class:`UnsupportedVolume` (a volume it
may read is not there, or is of a kind it cannot read: announced as a failed snapshot, then dead-lettered).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from rokcommon.errors import PermanentError
from rokcommon.events import RunRef, StepRef, VolumeRef

CSI_PLUGIN = "kubernetes.io~csi"


class VolumeRefused(PermanentError):
    """The event names a volume this snapshotter may not read: outside its roots, climbing out with ``..`` or a
    symlink, another pod's or another node's, or not the run's."""


class VolumeNotFound(PermanentError):
    """A volume this snapshotter may read is not on this node (or is not a directory)."""


class UnsupportedVolume(PermanentError):
    """A volume of the run's pod that the snapshotter cannot read (a kind of PV it does not know)."""


class LocalVolumes:
    """Volumes off a cluster: directories under ``roots``."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = tuple(roots)

    async def locate(self, volume: VolumeRef, run: RunRef, step: StepRef | None) -> Path:
        if volume.path is None:
            raise VolumeRefused(
                f"volume {volume.name!r} names pod {volume.pod_name or volume.pod_uid!r}, and this snapshotter is "
                "not in a cluster (ROK_KUBE=off): it reads only directories given by path"
            )
        return directory_in_roots(volume, volume.path, self.roots)


def directory_in_roots(volume: VolumeRef, path: str, roots: Sequence[Path], *, what: str = "its path") -> Path:
    """``path`` with its symlinks resolved, provided it is plain and lies in one of ``roots``."""
    pure = PurePosixPath(path)
    if not pure.is_absolute() or ".." in pure.parts:
        raise VolumeRefused(
            f"volume {volume.name!r}: {what} {path!r} is not a plain absolute path (it climbs with '..'); "
            "refusing to read it"
        )
    if not roots:
        raise VolumeRefused(
            f"volume {volume.name!r}: {what} is {path}, and no directory may be read by path here "
            "(ROK_VOLUME_ROOTS is empty)"
        )
    real = Path(os.path.realpath(pure))
    for root in roots:
        if real.is_relative_to(os.path.realpath(root)):
            return _existing_directory(volume, real)
    shown = path if str(real) == str(pure) else f"{path} (which leads to {real})"
    raise VolumeRefused(
        f"volume {volume.name!r}: {shown} is not in ROK_VOLUME_ROOTS ({os.pathsep.join(map(str, roots))}); "
        "refusing to read it"
    )


def kubelet_mount(volume: VolumeRef, pods_dir: Path, pod_uid: str, plugin: str, pv: str) -> Path:
    """The directory the kubelet mounted PV ``pv`` at for pod ``pod_uid`` with volume plugin ``plugin``."""
    root = Path(os.path.realpath(pods_dir))
    parts = [_component(volume, "pod uid", pod_uid), "volumes", _component(volume, "plugin", plugin)]
    path = root.joinpath(*parts, _component(volume, "PV name", pv))
    if plugin == CSI_PLUGIN:
        path = path / "mount"
    if not os.path.lexists(path):
        raise VolumeNotFound(
            f"volume {volume.name!r} is not mounted on this node: no directory {path}; is ROK_KUBELET_PODS_DIR "
            f"({pods_dir}) the kubelet's pods directory as mounted into the snapshotter?"
        )
    real = Path(os.path.realpath(path))
    if real != path:
        raise VolumeRefused(
            f"volume {volume.name!r}: {path} leads to {real} through a symlink; the kubelet mounts volumes at "
            "real directories, refusing to follow it"
        )
    return _existing_directory(volume, path)


def _component(volume: VolumeRef, field: str, value: str) -> str:
    """A value that must be exactly one path component (no ``/``, not ``.`` or ``..``)."""
    if not value or "/" in value or "\0" in value or value in (".", ".."):
        raise VolumeRefused(
            f"volume {volume.name!r} has {field} {value!r}, which is not a single path component; "
            "refusing to look outside the kubelet's pods directory"
        )
    return value


def _existing_directory(volume: VolumeRef, path: Path) -> Path:
    if not path.exists():
        raise VolumeNotFound(f"volume {volume.name!r}: directory {path} does not exist; is the volume on this machine?")
    if not path.is_dir():
        raise VolumeNotFound(f"volume {volume.name!r}: {path} is not a directory; a volume must be a directory")
    return path
