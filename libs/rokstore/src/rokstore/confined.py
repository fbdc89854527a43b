"""A directory tree written through descriptors, never through a path a symlink could redirect.

Every path is opened one component at a time relative to its parent's descriptor, each component with
``O_NOFOLLOW`` (``O_DIRECTORY`` for directories), and every later change — owner, mode, xattrs, times — is
made on the opened descriptor (``fchown``, ``fchmod``, ``futimens``) or with ``dir_fd`` and no following.
Whoever swaps a directory for a symlink meanwhile makes the next operation under it fail with
:class:`TargetChanged`, naming the path; nothing is written where the symlink points.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections import OrderedDict
from typing import NamedTuple

from rokstore.errors import RestoreFailed, TargetChanged
from rokstore.xattrs import write_xattrs

try:
    from rokscan import write_new as _write_new
except ImportError:  # not built here: the same steps one system call at a time in Python
    _write_new = None  # type: ignore[assignment]

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)
_O_PATH = getattr(os, "O_PATH", 0) | os.O_NOFOLLOW | os.O_CLOEXEC
CACHED_DIRS = 64  # directory descriptors each thread keeps open
_SWAPPED = (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EMLINK)
_KINDS = {"d": stat.S_IFDIR, "f": stat.S_IFREG, "h": stat.S_IFREG, "l": stat.S_IFLNK, "p": stat.S_IFIFO}
_KINDS |= {"c": stat.S_IFCHR, "b": stat.S_IFBLK}
# the step rokscan.write_new names as failed -> what the error says could not be done
_VERBS = {
    "create": "create",
    "write": "write",
    "stat": "set the metadata of",
    "mode": "set the mode of",
    "time": "set the metadata of",
}


class Written(NamedTuple):
    """A file :meth:`ConfinedTree.write_new` made: its type and mode and its size as ``fstat`` saw them after the
    write, and what of its metadata could not be given (its owner, say), one line each."""

    st_mode: int
    st_size: int
    problems: list[str]


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

    def create_open(self, rel: str) -> int:
        """A new, empty regular file (never an existing one), open for writing."""
        parent_fd, name = self._parent(rel)
        try:
            return os.open(name, O_WRITE | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=parent_fd)
        except OSError as error:
            raise self.failed("create", rel, error) from None

    def write_new(
        self,
        rel: str,
        data: bytes | memoryview,
        mode: int,
        owner: tuple[int, int] | None,
        mtime: int,
        xattrs: dict[str, str] | None = None,
    ) -> Written:
        """A new regular file ``rel`` (never an existing one) holding ``data``, given ``owner`` (None: left as
        created), ``mode``, ``mtime`` and ``xattrs`` on its one descriptor. With :mod:`rokscan` built and no
        xattrs, the six system calls are made in C with the GIL released once (a restore of many small files
        otherwise spends its time handing the GIL between its threads at each call)."""
        if _write_new is None or xattrs:
            fd = self.create_open(rel)
            try:
                try:
                    if os.write(fd, data) != len(data):
                        raise RestoreFailed(f"cannot write {rel!r} in {self.where}: short write")
                except OSError as error:
                    raise self.failed("write", rel, error) from None
                st = os.fstat(fd)
                problems = self.apply_to(fd, rel, "f", mode, owner, mtime, xattrs or {}, st=st)
                return Written(st.st_mode, st.st_size, problems)
            finally:
                os.close(fd)
        parent_fd, name = self._parent(rel)
        uid, gid = owner if owner is not None else (-1, -1)
        step, code, st_mode, st_size, chown_code = _write_new(parent_fd, name, data, mode, mtime, uid, gid)
        if step is not None:
            raise self.failed(_VERBS[step], rel, OSError(code, os.strerror(code)))
        problems = [f"{rel}: owner not restored ({os.strerror(chown_code)})"] if chown_code else []
        return Written(st_mode, st_size, problems)

    def create(self, rel: str, size: int) -> None:
        """A new regular file (never an existing one) of ``size`` bytes, all of them a hole for now."""
        fd = self.create_open(rel)
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
        try:
            return self.apply_to(fd, rel, kind, mode, owner, mtime, xattrs, on_path=flags == _O_PATH)
        finally:
            if kind != "d":
                os.close(fd)

    def apply_to(
        self,
        fd: int,
        rel: str,
        kind: str,
        mode: int,
        owner: tuple[int, int] | None,
        mtime: int,
        xattrs: dict[str, str],
        *,
        on_path: bool = False,
        st: os.stat_result | None = None,
    ) -> list[str]:
        """:meth:`apply` on ``fd``, the open descriptor of ``rel`` (``on_path``: an ``O_PATH`` one), left open;
        ``st``: its ``fstat``, if the caller has it already."""
        problems: list[str] = []
        try:
            if st is None:
                st = os.fstat(fd)
            if stat.S_IFMT(st.st_mode) != _KINDS[kind]:
                raise self.failed("set the metadata of", rel, OSError(errno.ELOOP, "its type changed"))
            # fchmod and fchown do not take an O_PATH descriptor: use its /proc name. A file that has its owner
            # already (made by the user it belongs to) is not chown'ed again: one syscall less per file.
            if owner is not None and (st.st_uid, st.st_gid) != owner:
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
