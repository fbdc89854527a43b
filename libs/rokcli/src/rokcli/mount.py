"""``rok mount URL DIR`` and ``rok umount DIR``: a version (a volume, a version, or a whole run) as a read-only
FUSE file system (pyfuse3, on libfuse 3), read from the store on demand.

The tree is the one ``rok ls --path`` and ``rok cat`` show (:mod:`rokcli.browse`): below a run's URL one directory
per version (``initial``, ``<step>-before``, ``<step>-after``), below a version's one per volume, below a volume's
the volume itself. Those made-up directories are read-only ``0555`` directories of the mounting user; everything
below them is as stored: modes, owners, nanosecond mtimes, symlinks and their targets, hard links (one inode
number, its link count the number of its names in the volume), fifos and devices (as nodes; nothing is behind
them), sparse files (holes read as zeros, and ``st_blocks`` counts only the data). A directory's link count is 1,
as btrfs reports it: it is not stored, and ``find`` then counts on nothing.

Bytes come from the restorer over the bus (:mod:`rokcommon.browse`), which checks every chunk against its BLAKE3
id: a file with a damaged chunk fails its reads with ``EIO``, never with wrong bytes. This process keeps the
blocks it read in a bounded cache (:data:`CACHE_BYTES`) and reads one block ahead of a sequential reader; the
kernel keeps what it read in its page cache (the version never changes). Ctrl-C (or SIGTERM) and ``rok umount
DIR`` unmount cleanly.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import logging
import os
import signal
import stat
import subprocess
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rokcommon.browse import BrowseClient, BrowseEntry, read_size
from rokcommon.connection import connect
from rokcommon.errors import Forbidden, NotFound, RokError
from rokcommon.registry_client import RegistryClient
from rokcommon.settings import RokSettings

from rokcli.browse import Place, top
from rokcli.user import check_url, exit_codes

log = logging.getLogger(__name__)

CACHE_BYTES = 64 << 20  # blocks kept by the mount
TIMEOUT = 300.0  # seconds the kernel may keep names and attributes: a version never changes
FSTYPE = "fuse.rok"
ROOT = 1  # pyfuse3.ROOT_INODE
_KIND_BITS = {
    "dir": stat.S_IFDIR,
    "file": stat.S_IFREG,
    "hardlink": stat.S_IFREG,
    "symlink": stat.S_IFLNK,
    "fifo": stat.S_IFIFO,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
}


@dataclass
class Item:
    """One inode: a made-up directory (``volume_url`` None, ``made_up`` its entries' URLs) or an entry of a
    volume (for a hard link, the file it names: ``path`` is the file's)."""

    ino: int
    entry: BrowseEntry
    volume_url: str | None
    path: str = ""
    made_up: dict[str, str] | None = None
    children: dict[bytes, int] | None = field(default=None, repr=False)
    allocated: int = 0  # bytes of data (not holes), for st_blocks
    pending: bool = False  # a volume's root, whose own entry is not read yet


class Blocks:
    """Blocks of files (inode, block number) → bytes, up to ``limit`` bytes; one fetch per block at a time."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit = limit
        self.size = 0
        self._blocks: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._fetching: dict[tuple[int, int], asyncio.Task[bytes]] = {}

    async def get(self, key: tuple[int, int], fetch: Any) -> bytes:
        data = self._blocks.get(key)
        if data is not None:
            self._blocks.move_to_end(key)
            return data
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(fetch())
            self._fetching[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task)

    def _done(self, key: tuple[int, int], task: asyncio.Task[bytes]) -> None:
        self._fetching.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        data = task.result()
        self._blocks[key] = data
        self.size += len(data)
        while self.size > self.limit and self._blocks:
            _, dropped = self._blocks.popitem(last=False)
            self.size -= len(dropped)

    def holds(self, key: tuple[int, int]) -> bool:
        return key in self._blocks or key in self._fetching


def fuse_error(error: Exception) -> Exception:
    """The errno a failure reads as: not there → ENOENT, not yours → EACCES, anything else (a damaged chunk, a
    store that does not answer) → EIO."""
    import pyfuse3

    if isinstance(error, NotFound):
        return pyfuse3.FUSEError(errno.ENOENT)
    if isinstance(error, Forbidden):
        return pyfuse3.FUSEError(errno.EACCES)
    return pyfuse3.FUSEError(errno.EIO)


def operations(client: BrowseClient, registry: RegistryClient, url: str, root: Place) -> Any:
    """The pyfuse3 file system of ``url`` (imported here: only ``rok mount`` loads libfuse)."""
    import pyfuse3

    block = max(128 << 10, read_size(client.nc) // (128 << 10) * (128 << 10))

    class VersionFs(pyfuse3.Operations):
        def __init__(self) -> None:
            super().__init__()
            self.items: dict[int, Item] = {}
            self.keys: dict[tuple[str, str], int] = {}
            self.links: dict[str, asyncio.Task[dict[str, int]]] = {}  # volume URL → file path → link count
            self.blocks = Blocks()
            self.uid, self.gid = os.getuid(), os.getgid()
            self._add(root, url, ROOT)

        # --- the inode table ----------------------------------------------------------------------------

        def _add(self, place: Place, where: str, ino: int | None = None) -> Item:
            ino = ino or len(self.items) + 1
            entry = BrowseEntry(path="", kind="dir", mode=0o555, uid=self.uid, gid=self.gid)
            made_up = dict(place.children) if place.volume_url is None else None
            item = Item(ino, entry, place.volume_url, made_up=made_up, pending=place.volume_url is not None)
            self.items[ino] = item
            self.keys[("url", where)] = ino
            if place.volume_url is not None:
                self._links(place.volume_url)
            return item

        async def _volume_root(self, item: Item) -> None:
            """A volume's root takes its own entry (mode, owner, mtime) the first time it is looked at."""
            if item.pending and item.volume_url is not None:
                item.entry = await client.stat(item.volume_url, "")
                item.pending = False

        def _child(self, volume_url: str, entry: BrowseEntry) -> Item:
            path = entry.link if entry.kind == "hardlink" and entry.link else entry.path
            key = (volume_url, path)
            ino = self.keys.get(key)
            if ino is not None:
                return self.items[ino]
            ino = len(self.items) + 1
            shown = entry.model_copy(update={"kind": "file"}) if entry.kind == "hardlink" else entry
            item = Item(ino, shown, volume_url, path, allocated=entry.allocated)
            self.items[ino] = item
            self.keys[key] = ino
            return item

        async def _children(self, item: Item) -> dict[bytes, int]:
            if item.children is not None:
                return item.children
            children: dict[bytes, int] = {}
            if item.made_up is not None:
                for name, below in item.made_up.items():
                    ino = self.keys.get(("url", below))
                    child = self.items[ino] if ino else self._add(await top(registry, below), below)
                    children[os.fsencode(name)] = child.ino
            else:
                assert item.volume_url is not None
                async for entry in client.list_all(item.volume_url, item.path):
                    children[os.fsencode(entry.name)] = self._child(item.volume_url, entry).ino
            item.children = children
            return children

        async def _nlink(self, item: Item) -> int:
            if item.entry.kind != "file" or item.volume_url is None:
                return 1
            try:
                counts = await self._links(item.volume_url)
            except RokError:
                self.links.pop(item.volume_url, None)  # asked again next time
                raise
            return counts.get(item.path, 1)

        def _links(self, volume_url: str) -> asyncio.Task[dict[str, int]]:
            """Each file's link count in a volume, asked once, as soon as the volume is seen."""
            task = self.links.get(volume_url)
            if task is None:

                async def count() -> dict[str, int]:
                    found = await client.links(volume_url)
                    return {first: 1 + len(later) for first, later in found.items()}

                task = self.links[volume_url] = asyncio.get_running_loop().create_task(count())
                task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a failure shows on the asking
            return task

        async def _attrs(self, item: Item) -> Any:
            await self._volume_root(item)
            e = item.entry
            attrs = pyfuse3.EntryAttributes()
            attrs.st_ino = item.ino
            attrs.generation = 0
            attrs.entry_timeout = TIMEOUT
            attrs.attr_timeout = TIMEOUT
            attrs.st_mode = _KIND_BITS[e.kind] | (e.mode & 0o7777)
            attrs.st_nlink = await self._nlink(item)
            attrs.st_uid, attrs.st_gid = e.uid, e.gid
            attrs.st_rdev = e.rdev
            attrs.st_size = e.size if e.kind == "file" else len(os.fsencode(e.target or "")) if e.target else 0
            attrs.st_blksize = block
            attrs.st_blocks = (item.allocated + 511) // 512 if e.kind == "file" else 0
            attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = e.mtime_ns
            return attrs

        # --- operations ----------------------------------------------------------------------------------

        async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
            try:
                parent = self.items[parent_inode]
                if name == b".":
                    return await self._attrs(parent)
                if parent.children is None and parent.volume_url is not None:
                    # one entry asked for, not the whole directory listed (a lookup walks a path)
                    path = "/".join(p for p in (parent.path, os.fsdecode(name)) if p)
                    return await self._attrs(self._child(parent.volume_url, await client.stat(parent.volume_url, path)))
                ino = (await self._children(parent)).get(name)
                if ino is None:
                    raise pyfuse3.FUSEError(errno.ENOENT)
                return await self._attrs(self.items[ino])
            except RokError as error:
                raise fuse_error(error) from None

        async def getattr(self, inode: int, ctx: Any = None) -> Any:
            try:
                return await self._attrs(self.items[inode])
            except RokError as error:
                raise fuse_error(error) from None

        async def readlink(self, inode: int, ctx: Any) -> bytes:
            target = self.items[inode].entry.target
            if target is None:
                raise pyfuse3.FUSEError(errno.EINVAL)
            return os.fsencode(target)

        async def opendir(self, inode: int, ctx: Any) -> int:
            if self.items[inode].entry.kind != "dir":
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            return inode

        async def readdir(self, fh: int, start_id: int, token: Any) -> None:
            try:
                children = list((await self._children(self.items[fh])).items())
                for i in range(start_id, len(children)):
                    name, ino = children[i]
                    if not pyfuse3.readdir_reply(token, name, await self._attrs(self.items[ino]), i + 1):
                        break
            except RokError as error:
                raise fuse_error(error) from None

        async def open(self, inode: int, flags: int, ctx: Any) -> Any:
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
                raise pyfuse3.FUSEError(errno.EROFS)
            if self.items[inode].entry.kind != "file":
                raise pyfuse3.FUSEError(errno.EIO)
            return pyfuse3.FileInfo(fh=inode, keep_cache=True)

        async def read(self, fh: int, off: int, size: int) -> bytes:
            item = self.items[fh]
            end = min(off + size, item.entry.size)
            if off >= end:
                return b""
            first, last = off // block, (end - 1) // block
            try:
                parts = [await self._block(item, n) for n in range(first, last + 1)]
            except RokError as error:
                log.warning("read of %s in %s failed: %s", item.path, item.volume_url, error)
                raise fuse_error(error) from None
            following = last + 1
            if following * block < item.entry.size and not self.blocks.holds((item.ino, following)):
                asyncio.get_running_loop().create_task(self._ahead(item, following))
            data = b"".join(parts)
            return data[off - first * block : end - first * block]

        async def _block(self, item: Item, n: int) -> bytes:
            assert item.volume_url is not None
            volume_url = item.volume_url

            async def fetch() -> bytes:
                return await client.read(volume_url, item.path, n * block, block)

            return await self.blocks.get((item.ino, n), fetch)

        async def _ahead(self, item: Item, n: int) -> None:
            try:
                await self._block(item, n)
            except (RokError, asyncio.CancelledError):
                return  # the read that needs the block reports it

        async def statfs(self, ctx: Any) -> Any:
            st = pyfuse3.StatvfsData()
            st.f_bsize = st.f_frsize = block
            st.f_namemax = 255
            return st

        async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

        async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
            return []

    return VersionFs()


def is_mounted(where: Path) -> bool:
    """Whether a rok file system is mounted at ``where`` (read from /proc/self/mounts)."""
    target = str(where.absolute())
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1].replace("\\040", " ") == target and fields[2] == FSTYPE:
            return True
    return False


async def serve(url: str, mountpoint: Path, settings: RokSettings, ready: Any = None) -> None:
    """Mount ``url`` at ``mountpoint`` until Ctrl-C, SIGTERM or an unmount; unmount on the way out."""
    import pyfuse3
    import pyfuse3.asyncio

    nc = await connect(settings, name="rok-mount")
    try:
        registry = RegistryClient(nc, settings.namespace)
        place = await top(registry, url)  # an unknown URL, or another namespace's, fails before anything is mounted
        client = BrowseClient(nc, settings.namespace, requested_by="rok-cli")
        fs = operations(client, registry, url, place)
        pyfuse3.asyncio.enable()
        options = set(pyfuse3.default_options) | {"ro", "fsname=rok", "subtype=rok"}
        pyfuse3.init(fs, str(mountpoint), options)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, pyfuse3.terminate)
        if ready:
            ready()
        try:
            await pyfuse3.main()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            pyfuse3.close(unmount=True)
    finally:
        await nc.close()


@click.command("mount")
@click.argument("url")
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@exit_codes
def mount(url: str, mountpoint: Path) -> None:
    """Mount a version read-only at MOUNTPOINT (an empty directory) until Ctrl-C or `rok umount MOUNTPOINT`.

    URL is a volume's, a version's (one directory per volume) or a run's (one directory per version, by step and
    phase). Files are read from the store on demand, each chunk checked; a damaged one reads as an I/O error.
    """
    check_url(url)
    mountpoint = mountpoint.expanduser().absolute()
    if not mountpoint.is_dir():
        raise click.BadParameter(f"{mountpoint} is not a directory: create it first", param_hint="MOUNTPOINT")
    if any(mountpoint.iterdir()):
        raise click.BadParameter(f"{mountpoint} is not empty: mount on an empty directory", param_hint="MOUNTPOINT")
    if importlib.util.find_spec("pyfuse3") is None:
        raise click.ClickException(
            "rok mount needs pyfuse3, which is not installed: pip install 'rokcli[mount]' "
            "(it builds against libfuse 3; Debian: apt-get install fuse3 libfuse3-dev pkg-config)"
        )
    if not Path("/dev/fuse").exists():
        raise click.ClickException(
            "this machine has no /dev/fuse: rok mount needs FUSE (Debian: apt-get install fuse3)"
        )

    def ready() -> None:
        click.echo(f"mounted {url} at {mountpoint} (read-only); Ctrl-C or `rok umount {mountpoint}` unmounts", err=True)

    asyncio.run(serve(url, mountpoint, RokSettings(), ready))
    click.echo(f"unmounted {mountpoint}", err=True)


@click.command("umount")
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@exit_codes
def umount(mountpoint: Path) -> None:
    """Unmount a version mounted with `rok mount` at MOUNTPOINT (its `rok mount` then ends)."""
    mountpoint = mountpoint.expanduser().absolute()
    if not is_mounted(mountpoint):
        raise click.BadParameter(f"no rok mount at {mountpoint}", param_hint="MOUNTPOINT")
    done = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise click.ClickException(f"could not unmount {mountpoint}: {done.stderr.strip() or done.returncode}")
