"""A local run's clone of the notebook's volumes: made without a full copy where the filesystem can, and removed
once the run's snapshots hold it.

Where the notebook's directories and the runs directory are on one filesystem that shares extents (btrfs, XFS
with reflink, bcachefs, …), each file is cloned with the ``FICLONE`` ioctl, as ``cp --reflink=auto`` does: the
clone costs no data blocks until a step writes. :func:`reflinks_work` asks the filesystem once (cloning one
file of the notebook into the runs directory); elsewhere (ext4, tmpfs) the runner restores the initial version
through the restorer, a full and verified copy from the store.

After the run every state of the clone is in the store (each step's before- and after-version), so
:func:`remove_clone` deletes it, unless ``rok run --keep`` asked to keep it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h


@dataclass
class CloneStats:
    files: int = 0
    bytes: int = 0
    reflinked: int = 0  # files cloned by sharing extents; the others were copied


def reflink(source: Path, target: Path) -> bool:
    """Clone ``source`` into the new file ``target`` by sharing its extents; False (and no file) if the
    filesystem cannot."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return True
        except OSError:
            pass
    target.unlink()
    return False


def reflinks_work(sources: list[Path], into: Path) -> bool:
    """Whether files of ``sources`` can be cloned into ``into`` by reflink (tried on one file, then removed)."""
    into.mkdir(parents=True, exist_ok=True)
    for root in sources:
        for dirpath, _, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file() or path.stat().st_size == 0:
                    continue
                probe = into / f".reflink-probe-{os.getpid()}"
                try:
                    return reflink(path, probe)
                except OSError:
                    return False
                finally:
                    probe.unlink(missing_ok=True)
    return False


def clone_tree(source: Path, target: Path) -> CloneStats:
    """Copy the tree ``source`` into the new directory ``target``, each file by reflink where the filesystem can
    (else copied), with modes and modification times; symlinks are copied as links."""
    stats = CloneStats()
    target.mkdir(parents=True, exist_ok=False)
    made: list[tuple[Path, Path]] = [(source, target)]  # directories, parents first: their times are set last
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        there = target / here.relative_to(source)
        for name in dirnames:
            path = here / name
            if path.is_symlink():
                os.symlink(os.readlink(path), there / name)
            else:
                (there / name).mkdir()
                made.append((path, there / name))
        for name in filenames:
            path, copy = here / name, there / name
            found = path.lstat()
            if stat.S_ISLNK(found.st_mode):
                os.symlink(os.readlink(path), copy)
                continue
            if not stat.S_ISREG(found.st_mode):
                continue  # sockets, fifos, devices: nothing a step reads as data
            if reflink(path, copy):
                stats.reflinked += 1
            else:
                shutil.copyfile(path, copy)
            shutil.copystat(path, copy)
            stats.files += 1
            stats.bytes += found.st_size
    for path, copy in reversed(made):  # children before parents: filling a directory changed its times
        shutil.copystat(path, copy)
    return stats


def remove_clone(run_dir: Path) -> None:
    """Delete a run's clone, read-only directories included (a step may have left some)."""
    if not run_dir.is_dir() or run_dir.is_symlink():
        return
    os.chmod(run_dir, 0o700)
    for dirpath, dirnames, _ in os.walk(run_dir):  # top-down: each directory made writable before it is entered
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o700)
    shutil.rmtree(run_dir)
