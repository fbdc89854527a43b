"""What ``rok run`` reads: rok's own pipeline file, or a KFP-compiled one with its PVCs mapped to directories.

A KFP task finds each PVC it mounts at the mount path its platform spec gives (``/data``), bind-mounted from the
run's clone in the task's own mount namespace (:mod:`.mounts`). Before the run, :func:`load_any` makes sure that
this can be done here: a mount namespace with a bind mount is tried, and every mount path exists or may be
created; :func:`mount_points` creates the missing ones for the run and removes them after it (after the last of
the runs that use them, should several run at once).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from rok_pipeline_watcher.kfp import mounts
from rok_pipeline_watcher.kfp.spec import KfpPipeline, arguments, is_kfp_pipeline, load_kfp, local_pipeline
from rok_pipeline_watcher.runner.pipeline import Pipeline, PipelineError

MADE_BY_ROK = ".rok-mount-point"  # in each directory rok made for a mount path, until it removes it


def pairs(values: Sequence[str], option: str) -> dict[str, str]:
    """``NAME=VALUE`` options as a mapping; the same name twice, or no ``=``, is an error naming it."""
    found: dict[str, str] = {}
    for value in values:
        name, sign, rest = value.partition("=")
        if not sign or not name:
            raise PipelineError(f"{option} {value!r}: expected NAME=VALUE")
        if name in found:
            raise PipelineError(f"{option} {name}: given twice")
        found[name] = rest
    return found


def load_any(
    path: Path, *, volumes: Sequence[str], parameters: Sequence[str], loader: Callable[[Path], Pipeline]
) -> Pipeline:
    """The pipeline in ``path``, read with ``loader`` unless the KFP SDK compiled it."""
    if not is_kfp_pipeline(path):
        if volumes or parameters:
            raise PipelineError(
                f"{path}: -p and --volume are for notebooks and pipelines compiled by the KFP SDK; this file is rok's "
                "own pipeline file, whose volumes are in the file"
            )
        return loader(path)
    pipeline = load_kfp(path)
    directories = {name: Path(directory).expanduser() for name, directory in pairs(volumes, "--volume").items()}
    local = local_pipeline(pipeline, directories, arguments(pipeline, pairs(parameters, "-p")))
    mount_points_to_make(pipeline, directories)
    mounting = [task.name for task in pipeline.tasks if task.mounts]
    if mounting:
        reason = mounts.check()
        if reason is not None:
            raise PipelineError(
                f"{path}: the tasks {', '.join(mounting)} mount PVCs, which rok run bind-mounts at their mount paths "
                f"in a mount namespace of each task's own, and {reason}"
            )
    return local


def mount_points_to_make(pipeline: KfpPipeline, volumes: Mapping[str, Path] | None = None) -> list[Path]:
    """The tasks' mount paths that rok makes for the run: those that do not exist yet, all of which this user may
    create, and those rok made for another run still going; raises :class:`PipelineError` naming the task, the
    PVC and the path of one that is in the way or may not be made.

    A mount path inside another PVC's mount path of the same task is a directory of that PVC: it must be in the
    PVC's directory (``volumes``), and is never created there."""
    missing: list[Path] = []
    for task in pipeline.tasks:
        for mount in task.mounts:
            point = Path(mount.path)
            what = f"{pipeline.path}: task {task.name!r} mounts PVC {mount.pvc!r} at {mount.path}"
            outer = max(
                (o for o in task.mounts if o is not mount and point.is_relative_to(o.path) and Path(o.path) != point),
                key=lambda o: len(Path(o.path).parts),
                default=None,
            )
            if outer is not None:
                inside = (volumes or {}).get(outer.pvc)
                if inside is not None and not (inside / point.relative_to(outer.path)).is_dir():
                    raise PipelineError(
                        f"{what}, inside {outer.path} where it mounts PVC {outer.pvc!r}, but that PVC's directory "
                        f"has no {point.relative_to(outer.path)}: create {inside / point.relative_to(outer.path)}"
                    )
                continue
            if point.is_dir():
                if (point / MADE_BY_ROK).is_file() and point not in missing:
                    missing.append(point)
                continue
            if point.exists() or point.is_symlink():
                raise PipelineError(f"{what}, which is not a directory: move it away, or mount the PVC elsewhere")
            parent = next(p for p in point.parents if p.exists() or p.is_symlink())
            if not parent.is_dir():
                raise PipelineError(f"{what}, but {parent} is not a directory: mount the PVC elsewhere")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PipelineError(
                    f"{what}, which does not exist, and this user (uid {os.geteuid()}) may not create it in "
                    f"{parent}: create the directory (sudo mkdir -p {mount.path}) or run rok as a user who may"
                )
            if point not in missing:
                missing.append(point)
    return missing


@contextlib.contextmanager
def mount_points(path: Path) -> Iterator[list[Path]]:
    """For a KFP pipeline, its tasks' mount paths that do not exist, created for the run and removed after it; yields
    the directories this run created.

    Only directories rok created are removed (each holds a :data:`MADE_BY_ROK` file, hidden under the mount while
    a task runs), and only by the last run that uses them: every run holds a shared lock on each mount path it
    needs, and the run that can turn its lock exclusive removes the path; a task writes nothing in a mount path
    itself, only in the directory mounted there."""
    if not is_kfp_pipeline(path):
        yield []
        return
    created: list[Path] = []
    held: dict[Path, int] = {}
    try:
        for point in mount_points_to_make(load_kfp(path)):
            held[point] = _hold(point, created)
        yield created
    finally:
        for point, descriptor in held.items():
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another run uses it: the last one removes it
                os.close(descriptor)
                continue
            for directory in [point, *point.parents]:
                if not (directory / MADE_BY_ROK).is_file():
                    break
                (directory / MADE_BY_ROK).unlink(missing_ok=True)
                try:
                    directory.rmdir()
                except OSError:  # it holds more: another mount path, or what someone put there
                    (directory / MADE_BY_ROK).touch()
                    break
            os.close(descriptor)


class _Vanished(Exception):
    """A directory on the way to a mount path went while it was being made (another run removed it)."""


def _hold(point: Path, created: list[Path]) -> int:
    """The directory ``point``, made if it is missing (its new directories added to ``created``), opened and
    shared-locked; made again should another run have removed it meanwhile."""
    while True:
        try:
            _make(point, created)
            descriptor = os.open(point, os.O_RDONLY | os.O_DIRECTORY)
        except (_Vanished, FileNotFoundError):
            continue
        fcntl.flock(descriptor, fcntl.LOCK_SH)
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.stat(point), os.fstat(descriptor)):
                return descriptor
        os.close(descriptor)


def _make(point: Path, created: list[Path]) -> None:
    for directory in [*reversed(point.parents), point]:
        if directory.is_dir():
            continue
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        except FileNotFoundError as error:
            raise _Vanished(directory) from error
        except OSError as error:
            raise PipelineError(f"cannot create the mount path {directory}: {error.strerror}") from error
        (directory / MADE_BY_ROK).touch()
        if directory not in created:
            created.append(directory)
