"""Where restored volumes go: one :class:`Target` per request, chosen by the request's target model.

A directory (:class:`DirectoryDestination`) is built in. The layout is fixed and documented in
``docs/restore.md``: a request that restores **one** volume writes it into the directory itself; a request that
restores **several** writes one sub-directory per volume, named after the volume (``<dir>/workspace``,
``<dir>/data``, …).

A new PVC or a new notebook server (:class:`~rokcommon.events.PvcTarget`, :class:`~rokcommon.events.NotebookTarget`)
is the Kubernetes side's job. It plugs in here: ``rok_restorer/kubernetes.py`` provides
``kubernetes_targets(settings) -> TargetFactory | None`` (None when no cluster is configured), and
:class:`Targets` hands PVC and notebook requests to that factory. Without it such a request fails with a reason
that says so.

The contract of a :class:`Target`, in the order the restorer calls it:

1. ``claim()`` — check that the destination can take the restore (a directory must be empty or absent; a PVC
   must not exist yet) and take it. Refusals are :class:`~rokcommon.errors.PermanentError` (the user must change
   the request); failures to reach the destination are :class:`~rokcommon.errors.TemporaryError`.
2. ``restore_volume(volume, into_directory)`` — once per volume, several at once. A target that can write to a
   local directory calls ``into_directory(path)``, which runs the store engine's verified restore there; a target
   that restores elsewhere (a pod mounting a new PVC) does its own work and reports the same statistics.
3. ``discard()`` — remove what this request wrote, after a failure or when a redelivered request finds its own
   earlier, interrupted attempt. Only ever called for a destination this request claimed.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rokcommon.errors import PermanentError
from rokcommon.events import DirectoryTarget, NotebookTarget, PvcTarget, RestoredVolume, RestoreTarget
from rokcommon.notebooks import NotebookServer, NotebookVolume
from rokstore import RestoreStats, TargetNotEmpty


@dataclass(frozen=True)
class VolumeToRestore:
    """One volume of a version, as the registry recorded it."""

    name: str
    snapshot_id: str
    repository: str
    size: int = 0
    original: NotebookVolume | None = None  # the notebook server's claim this volume was, if recorded


RestoreInto = Callable[[Path], Awaitable[RestoreStats]]


class Target(Protocol):
    """The destination of one restore request (see the module's docstring for the contract)."""

    async def claim(self) -> None: ...

    async def restore_volume(self, volume: VolumeToRestore, into_directory: RestoreInto) -> RestoredVolume: ...

    async def discard(self) -> None: ...


# (the request's target, the volumes, the notebook server the version's run came from if recorded) → Target
TargetFactory = Callable[[PvcTarget | NotebookTarget, Sequence[VolumeToRestore], NotebookServer | None], Target]


class TargetUnavailable(PermanentError):
    """The request names a kind of target this restorer cannot serve."""


class Targets:
    """Chooses the :class:`Target` for a request's target model."""

    def __init__(self, kubernetes: TargetFactory | None = None) -> None:
        self.kubernetes = kubernetes

    def open(
        self, model: RestoreTarget, volumes: Sequence[VolumeToRestore], notebook: NotebookServer | None = None
    ) -> Target:
        if isinstance(model, DirectoryTarget):
            return DirectoryDestination(Path(model.path), volumes)
        if self.kubernetes is None:
            what = "a new PVC" if isinstance(model, PvcTarget) else "a new notebook server"
            raise TargetUnavailable(
                f"restoring into {what} ({model.namespace}/{model.name}) needs the restorer's Kubernetes side, "
                "which this restorer runs without; restore into a directory, or send the request to the "
                "restorer deployed in the cluster"
            )
        return self.kubernetes(model, volumes, notebook)


class DirectoryDestination:
    """A local directory: one volume goes into the directory itself, several go into one sub-directory each."""

    def __init__(self, root: Path, volumes: Sequence[VolumeToRestore]) -> None:
        self.root = root
        self.single = len(volumes) == 1

    def directory_for(self, volume: VolumeToRestore) -> Path:
        return self.root if self.single else self.root / volume.name

    async def claim(self) -> None:
        await asyncio.to_thread(self._claim)

    def _claim(self) -> None:
        root = self.root
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise TargetNotEmpty(f"restore target {root} is not a directory; give an empty or new directory")
        if root.exists() and any(root.iterdir()):
            raise TargetNotEmpty(f"restore target {root} is not empty; give an empty or new directory")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TargetNotEmpty(
                f"cannot create the restore target {root}: {error.strerror}; give a directory the restorer may write"
            ) from error

    async def restore_volume(self, volume: VolumeToRestore, into_directory: RestoreInto) -> RestoredVolume:
        directory = self.directory_for(volume)
        stats = await into_directory(directory)
        return RestoredVolume(
            name=volume.name,
            snapshot_id=stats.snapshot_id,
            location=str(directory),
            files=stats.files,
            bytes=stats.bytes,
            seconds=stats.seconds,
        )

    async def discard(self) -> None:
        await asyncio.to_thread(empty_directory, self.root)


def empty_directory(root: Path) -> None:
    """Remove everything inside ``root`` (never following a symlink), even read-only directories it holds."""
    if root.is_symlink() or not root.is_dir():
        return
    for entry in os.scandir(root):
        _remove(entry.path)


def _remove(path: str) -> None:
    mode = os.lstat(path).st_mode
    if not stat.S_ISDIR(mode):
        os.unlink(path)
        return
    os.chmod(path, 0o700)  # a restored read-only directory must become writable to be emptied
    for entry in os.scandir(path):
        _remove(entry.path)
    os.rmdir(path)
