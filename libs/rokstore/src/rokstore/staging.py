"""Where a restore writes before its tree is in place, so that a failed restore leaves nothing that looks whole.

A private (0700) directory on the target's file system: beside a new target, renamed onto it at the end; or
inside an existing empty target (a mount point cannot be renamed over), whose entries are moved up at the end.
Either way a failed restore removes what it wrote, never following a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from rokstore.confined import O_DIR, ConfinedTree
from rokstore.errors import RestoreFailed, TargetChanged, TargetNotEmpty


class Staging:
    """A private directory a restore writes into, put in place by :meth:`commit` or removed by :meth:`discard`.

    A new target: a directory ``.<name>.rok-restore-<random>`` beside it, renamed onto the target at the end.
    An existing empty directory (a volume's mount point, say, which cannot be renamed over): a directory
    ``.rok-restore-<random>`` inside it, whose entries are moved up at the end, and whose mode, owner and
    mtime (the snapshot root's) then go to the target. Both are on the target's file system, so every move is
    a rename.
    """

    def __init__(self, target: Path, home_fd: int, name: str, inside: bool) -> None:
        self.target = target
        self.home_fd = home_fd  # the directory holding the staging directory
        self.name = name
        self.inside = inside
        self.root_fd = os.open(name, O_DIR, dir_fd=home_fd)
        self.tree = ConfinedTree(self.root_fd, str(target))
        self._done = False

    @classmethod
    def open(cls, target: Path) -> Staging:
        token = secrets.token_hex(6)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
        except OSError as error:
            raise TargetNotEmpty(f"cannot use restore target {target}: {error.strerror}") from None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise TargetNotEmpty(f"restore target {target} is not a directory; give an empty or new directory")
        try:
            if st is None:
                target.parent.mkdir(parents=True, exist_ok=True)
                # The path up to the target is the caller's to choose (symlinks included); below it nothing is followed.
                home_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                name, inside = f".{target.name}.rok-restore-{token}", False
            else:
                home_fd = os.open(target, O_DIR)
                if os.listdir(home_fd):
                    os.close(home_fd)
                    raise TargetNotEmpty(f"restore target {target} is not empty; give an empty or new directory")
                name, inside = f".rok-restore-{token}", True
            try:
                os.mkdir(name, 0o700, dir_fd=home_fd)
                return cls(target, home_fd, name, inside)
            except BaseException:
                os.close(home_fd)
                raise
        except OSError as error:
            raise TargetNotEmpty(
                f"cannot restore into {target}: {error.strerror}; give a directory this user may write"
            ) from None

    def commit(self, verify: Callable[[], None]) -> list[str]:
        """``verify`` the tree (its paths walked afresh), then put it in place; one line per part of the
        snapshot root's metadata an existing target could not be given."""
        self.tree.forget()
        verify()
        try:
            ours, there = os.fstat(self.root_fd), os.stat(self.name, dir_fd=self.home_fd, follow_symlinks=False)
            if (ours.st_dev, ours.st_ino) != (there.st_dev, there.st_ino):
                raise TargetChanged(f"the restore's staging directory beside {self.target} was replaced; not using it")
            problems = self._move_up() if self.inside else []
            if not self.inside:
                try:
                    os.lstat(self.target)
                    raise TargetNotEmpty(f"restore target {self.target} appeared while restoring; nothing was changed")
                except FileNotFoundError:
                    pass
                os.rename(self.name, self.target.name, src_dir_fd=self.home_fd, dst_dir_fd=self.home_fd)
        except OSError as error:
            raise RestoreFailed(f"cannot put the restored tree in place at {self.target}: {error.strerror}") from None
        self._done = True
        return problems

    def _move_up(self) -> list[str]:
        st = os.fstat(self.root_fd)  # the snapshot root's metadata, before the moves change its mtime
        as_root = os.geteuid() == 0
        os.fchmod(self.root_fd, 0o700)
        for name in os.listdir(self.root_fd):
            child = os.stat(name, dir_fd=self.root_fd, follow_symlinks=False)
            # Moving a directory to another parent rewrites its "..": it must be writable (for a non-root user).
            fixed = not as_root and stat.S_ISDIR(child.st_mode) and not child.st_mode & stat.S_IWUSR
            if fixed:
                fd = os.open(name, O_DIR, dir_fd=self.root_fd)
                try:
                    os.fchmod(fd, stat.S_IMODE(child.st_mode) | stat.S_IWUSR)
                    os.rename(name, name, src_dir_fd=self.root_fd, dst_dir_fd=self.home_fd)
                    os.fchmod(fd, stat.S_IMODE(child.st_mode))
                finally:
                    os.close(fd)
            else:
                os.rename(name, name, src_dir_fd=self.root_fd, dst_dir_fd=self.home_fd)
        xattrs = {attr: os.getxattr(self.root_fd, attr) for attr in _xattr_names(self.root_fd)}
        os.rmdir(self.name, dir_fd=self.home_fd)
        # Everything is in place: what the target (not made by this restore) refuses is said, not fatal.
        problems: list[str] = []
        fd = self.home_fd
        steps: list[tuple[str, Callable[[], None]]] = []
        if as_root:
            steps.append(("owner", lambda: os.fchown(fd, st.st_uid, st.st_gid)))
        steps.append(("mode", lambda: os.fchmod(fd, stat.S_IMODE(st.st_mode))))
        for attr, value in xattrs.items():
            steps.append((f"extended attribute {attr}", functools.partial(os.setxattr, fd, attr, value)))
        steps.append(("mtime", lambda: os.utime(fd, ns=(st.st_mtime_ns, st.st_mtime_ns))))
        for what, step in steps:
            try:
                step()
            except OSError as error:
                problems.append(f".: {what} of the target {self.target} not restored ({error.strerror})")
        return problems

    def discard(self) -> None:
        """Remove what the restore wrote (never following a symlink)."""
        self.tree.forget()
        if not self._done:
            with contextlib.suppress(OSError):
                remove_tree(self.home_fd, self.name)

    def close(self) -> None:
        self.tree.forget()
        os.close(self.root_fd)
        os.close(self.home_fd)


def _xattr_names(fd: int) -> list[str]:
    try:
        return os.listxattr(fd)
    except OSError:
        return []


def remove_tree(parent_fd: int, name: str, passes: int = 10) -> None:
    """Remove ``name`` under ``parent_fd`` and all it holds, read-only directories too, following no symlink
    (entries that vanish or appear meanwhile are taken in stride, a few passes over)."""
    try:
        fd = os.open(name, O_DIR, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError as error:
        if error.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent_fd)
        return
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o700)
        for _ in range(passes):
            for child in os.listdir(fd):
                try:
                    if stat.S_ISDIR(os.stat(child, dir_fd=fd, follow_symlinks=False).st_mode):
                        remove_tree(fd, child, passes)
                    else:
                        os.unlink(child, dir_fd=fd)
                except FileNotFoundError:
                    continue
            if not os.listdir(fd):
                break
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)
