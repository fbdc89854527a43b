"""A directory tree written through descriptors, never through a path a symlink could redirect.

Every path is opened one component at a time relative to its parent's descriptor, each component with
``O_NOFOLLOW`` (``O_DIRECTORY`` for directories), and every later change — owner, mode, xattrs, times — is
made on the opened descriptor (``fchown``, ``fchmod``, ``futimens``) or with ``dir_fd`` and no following.
Whoever swaps a directory for a symlink meanwhile makes the next operation under it fail with
:class:`TargetChanged`, naming the path; nothing is written where the symlink points.

:class:`Staging` is where a restore writes before its tree is in place: a private (0700) directory beside a
new target, renamed onto it at the end, or inside an existing empty target (a mount point cannot be renamed
over), whose entries are moved up at the end. Either way a failed restore removes what it wrote.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from rokstore.errors import RestoreFailed, TargetChanged, TargetNotEmpty
from rokstore.xattrs import write_xattrs

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)
_O_PATH = getattr(os, "O_PATH", 0) | os.O_NOFOLLOW | os.O_CLOEXEC
CACHED_DIRS = 64  # directory descriptors each thread keeps open
_SWAPPED = (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EMLINK)
_KINDS = {"d": stat.S_IFDIR, "f": stat.S_IFREG, "h": stat.S_IFREG, "l": stat.S_IFLNK, "p": stat.S_IFIFO}
_KINDS |= {"c": stat.S_IFCHR, "b": stat.S_IFBLK}


class ConfinedTree:
    """Paths relative to one root directory descriptor; safe to use from many threads at once."""

    def __init__(self, root_fd: int, where: str) -> None:
        self.root_fd = root_fd
        self.where = where  # the target, as messages name it
        self._local = threading.local()
        self._caches: list[OrderedDict[str, int]] = []
        self._lock = threading.Lock()

    # --- directories --------------------------------------------------------------------------------------

    def dir(self, rel: str) -> int:
        """The descriptor of directory ``rel``, each component opened without following symlinks.

        Valid until this thread's next call (a few dozen are kept open per thread, least recently used first).
        """
        if rel in ("", "."):
            return self.root_fd
        cache = self._cache()
        fd = cache.get(rel)
        if fd is not None:
            cache.move_to_end(rel)
            return fd
        parent, _, name = rel.rpartition("/")
        parent_fd = self.dir(parent)
        try:
            fd = os.open(name, O_DIR, dir_fd=parent_fd)
        except OSError as error:
            raise self.failed("open", rel, error) from None
        cache[rel] = fd
        while len(cache) > CACHED_DIRS:
            os.close(cache.popitem(last=False)[1])
        return fd

    def forget(self) -> None:
        """Close every cached descriptor, so that later operations walk their paths again (no other thread may be
        using the tree meanwhile)."""
        with self._lock:
            for cache in self._caches:
                while cache:
                    os.close(cache.popitem()[1])

    def _cache(self) -> OrderedDict[str, int]:
        cache: OrderedDict[str, int] | None = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = OrderedDict()
            with self._lock:
                self._caches.append(cache)
        return cache

    def _parent(self, rel: str) -> tuple[int, str]:
        parent, _, name = rel.rpartition("/")
        return self.dir(parent), name

    def failed(self, verb: str, rel: str, error: OSError) -> RestoreFailed:
        """The error for an operation on ``rel`` that failed; a swapped path is a :class:`TargetChanged`."""
        if error.errno in _SWAPPED:
            return TargetChanged(
                f"{rel!r} in {self.where} is no longer what the restore created ({error.strerror}): the target was "
                "changed while restoring, and nothing was written where it now leads"
            )
        return RestoreFailed(f"cannot {verb} {rel!r} in {self.where}: {error.strerror}")

    # --- creating -----------------------------------------------------------------------------------------

    def mkdir(self, rel: str) -> None:
        parent_fd, name = self._parent(rel)
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except OSError as error:
            raise self.failed("create directory", rel, error) from None

    def create(self, rel: str, size: int) -> None:
        """A new regular file (never an existing one) of ``size`` bytes, all of them a hole for now."""
        parent_fd, name = self._parent(rel)
        try:
            fd = os.open(name, O_WRITE | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=parent_fd)
        except OSError as error:
            raise self.failed("create", rel, error) from None
        try:
            if size:
                os.ftruncate(fd, size)
        except OSError as error:
            raise self.failed(f"make a file of {size} bytes:", rel, error) from None
        finally:
            os.close(fd)

    def open(self, rel: str, flags: int) -> int:
        parent_fd, name = self._parent(rel)
        try:
            return os.open(name, flags, dir_fd=parent_fd)
        except OSError as error:
            raise self.failed("open", rel, error) from None

    def link(self, existing: str, rel: str) -> None:
        source_fd = os.dup(self.dir(existing.rpartition("/")[0]))
        try:
            parent_fd, name = self._parent(rel)
            os.link(
                existing.rpartition("/")[2], name, src_dir_fd=source_fd, dst_dir_fd=parent_fd, follow_symlinks=False
            )
        except OSError as error:
            raise self.failed("create hard link", rel, error) from None
        finally:
            os.close(source_fd)

    def mkfifo(self, rel: str) -> None:
        parent_fd, name = self._parent(rel)
        try:
            os.mkfifo(name, 0o600, dir_fd=parent_fd)
        except OSError as error:
            raise self.failed("create fifo", rel, error) from None

    def mknod(self, rel: str, kind: int, device: int) -> None:
        parent_fd, name = self._parent(rel)
        try:
            os.mknod(name, 0o600 | kind, device, dir_fd=parent_fd)
        except OSError as error:
            raise self.failed("create device", rel, error) from None

    def symlink(self, target: str, rel: str) -> None:
        parent_fd, name = self._parent(rel)
        try:
            os.symlink(target, name, dir_fd=parent_fd)
        except OSError as error:
            raise self.failed("create symlink", rel, error) from None

    # --- metadata -----------------------------------------------------------------------------------------

    def apply(
        self, rel: str, kind: str, mode: int, owner: tuple[int, int] | None, mtime: int, xattrs: dict[str, str]
    ) -> list[str]:
        """Owner (when given), mode, xattrs and mtime of ``rel``, an entry of type ``kind`` (never through a
        symlink); one line per part that could not be set."""
        if kind == "l":
            return self._apply_symlink(rel, owner, mtime, xattrs)
        if kind == "d":
            flags = O_DIR
        elif kind == "f":
            flags = O_READ
        elif kind == "p":
            flags = O_READ | os.O_NONBLOCK  # opening a fifo's read end must not wait for a writer
        else:
            flags = _O_PATH  # a device node is not opened: opening one can act on the device
        fd = self.dir(rel) if kind == "d" else self.open(rel, flags)
        problems: list[str] = []
        try:
            st = os.fstat(fd)
            if stat.S_IFMT(st.st_mode) != _KINDS[kind]:
                raise self.failed("set the metadata of", rel, OSError(errno.ELOOP, "its type changed"))
            on_path = flags == _O_PATH  # fchmod and fchown do not take an O_PATH descriptor: use its /proc name
            if owner is not None:
                try:
                    if on_path:
                        parent_fd, name = self._parent(rel)
                        os.chown(name, *owner, dir_fd=parent_fd, follow_symlinks=False)
                    else:
                        os.fchown(fd, *owner)
                except OSError as error:
                    problems.append(f"{rel}: owner not restored ({error.strerror})")
            try:
                os.chmod(f"/proc/self/fd/{fd}", mode) if on_path else os.fchmod(fd, mode)
            except OSError as error:
                raise self.failed("set the mode of", rel, error) from None
            if xattrs:
                problems += [f"{rel}: extended attribute {n} not restored" for n in write_xattrs(fd, xattrs)]
            if on_path:
                parent_fd, name = self._parent(rel)
                os.utime(name, ns=(mtime, mtime), dir_fd=parent_fd, follow_symlinks=False)
            else:
                os.utime(fd, ns=(mtime, mtime))
        except OSError as error:
            raise self.failed("set the metadata of", rel, error) from None
        finally:
            if kind != "d":
                os.close(fd)
        return problems

    def _apply_symlink(self, rel: str, owner: tuple[int, int] | None, mtime: int, xattrs: dict[str, str]) -> list[str]:
        parent_fd, name = self._parent(rel)
        problems: list[str] = []
        try:
            if not stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                raise self.failed("set the metadata of", rel, OSError(errno.ELOOP, "it is no longer a symlink"))
            if owner is not None:
                try:
                    os.chown(name, *owner, dir_fd=parent_fd, follow_symlinks=False)
                except OSError as error:
                    problems.append(f"{rel}: owner not restored ({error.strerror})")
            if xattrs:
                failed = write_xattrs(f"/proc/self/fd/{parent_fd}/{name}", xattrs)
                problems += [f"{rel}: extended attribute {n} not restored" for n in failed]
            os.utime(name, ns=(mtime, mtime), dir_fd=parent_fd, follow_symlinks=False)
        except OSError as error:
            raise self.failed("set the metadata of", rel, error) from None
        return problems

    # --- checking -----------------------------------------------------------------------------------------

    def kind_of(self, rel: str) -> int:
        """``S_IFMT`` of ``rel``, not following a symlink."""
        if rel == ".":
            return stat.S_IFMT(os.fstat(self.root_fd).st_mode)
        parent_fd, name = self._parent(rel)
        try:
            return stat.S_IFMT(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
        except OSError as error:
            raise self.failed("check", rel, error) from None

    def names(self, rel: str) -> set[str]:
        try:
            return set(os.listdir(self.dir(rel)))
        except OSError as error:
            raise self.failed("list", rel, error) from None


def kind_matches(kind: str, mode_type: int) -> bool:
    return _KINDS.get(kind) == mode_type


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
                home_fd = os.open(target.parent, O_DIR)
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
