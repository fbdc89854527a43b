"""The walk's directory scan in C (rokscan) and its pure-Python twin give the same signature, byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import rokscan
from rokstore import Repository, restore, snapshot
from rokstore.archiver import walker
from rokstore.repository.cache import RECORD, pack_listing, unpack_listing

ODD_NAMES = [
    b"plain.txt",
    b"caf\xc3\xa9",  # UTF-8
    b"\xff\xfe-not-utf8",  # undecodable: a surrogate escape in Python, above valid UTF-8 in byte order
    b"\xee\x80\x80-private-use",  # sorts after the escape in str order, before it in byte order
    b"\xed\xa0\x80-lone-surrogate",
    b"new\nline",
    b" spaced ",
    b"-",
    b"Z-upper",
    b"a" * 255,
]


def python_signature(directory: Path) -> tuple[bytes, int, int, list[tuple[str, int, int]]]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        stats = [(name, os.lstat(name, dir_fd=fd)) for name in sorted(os.listdir(fd))]
    finally:
        os.close(fd)
    listing = [(n, s.st_mode, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for n, s in stats]
    regular = [s for _, s in stats if s.st_mode & 0o170000 == 0o100000]
    subdirs = sorted((n, s.st_dev, s.st_ino) for n, s in stats if s.st_mode & 0o170000 == 0o040000)
    return pack_listing(listing), len(regular), sum(s.st_size for s in regular), subdirs


def c_signature(directory: Path) -> tuple[bytes, int, int, list[tuple[str, int, int]]]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        signature, files, size, subdirs, failures = rokscan.scan(fd)
        assert os.listdir(fd) == os.listdir(directory)  # the descriptor is left where it was
    finally:
        os.close(fd)
    assert failures == []
    return signature, files, size, sorted(subdirs)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Every kind of entry, names with odd bytes, and enough entries to grow the scan's buffers."""
    root = tmp_path / "tree"
    root.mkdir()
    base = os.fsencode(root)
    for i, name in enumerate(ODD_NAMES):
        Path(os.fsdecode(base + b"/" + name)).write_bytes(b"x" * i)
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_text("inner\n")
    Path(os.fsdecode(base + b"/dir-\xff")).mkdir()
    os.symlink("plain.txt", root / "link")
    os.symlink("nowhere", root / "dangling")
    os.mkfifo(root / "fifo")
    os.link(root / "plain.txt", root / "hard-link")
    if os.geteuid() == 0:
        os.mknod(root / "null-device", 0o600 | 0o020000, os.makedev(1, 3))
    many = root / "many"
    many.mkdir()
    for i in range(3000):
        (many / f"file-{i:05d}-{'y' * (i % 40)}").write_bytes(b"z" * (i % 7))
    return root


def test_the_c_scan_and_the_python_path_give_the_same_signature(tree: Path) -> None:
    for directory in (tree, tree / "sub", tree / "many"):
        assert c_signature(directory) == python_signature(directory)
    signature, files, size, subdirs = c_signature(tree)
    children = unpack_listing(signature)
    names = [os.fsencode(c[0]) for c in children]
    assert names == sorted(os.fsencode(n) for n in os.listdir(tree))  # every child, in byte order
    assert names != [os.fsencode(n) for n in sorted(os.listdir(tree))]  # which str order is not
    assert files == len(ODD_NAMES) + 1  # the hard link is a regular file too
    assert size == sum(range(len(ODD_NAMES)))  # plain.txt (and its hard link) is empty
    assert [name for name, _, _ in subdirs] == sorted(["sub", os.fsdecode(b"dir-\xff"), "many"])
    assert len(signature) == sum(RECORD.size + len(n) for n in names)


def test_any_change_of_a_child_changes_the_signature(tree: Path) -> None:
    target = tree / "plain.txt"
    seen = {c_signature(tree)[0]}

    def changed() -> None:
        signature = c_signature(tree)[0]
        assert signature not in seen
        assert signature == python_signature(tree)[0]
        seen.add(signature)

    os.utime(target, ns=(1, 1_000_000_007))  # mtime (and ctime)
    changed()
    with open(target, "ab") as f:  # size
        f.write(b"!")
    changed()
    replacement = tree / "replacement"
    replacement.write_bytes(target.read_bytes())
    os.utime(replacement, ns=(1, 1_000_000_007))
    os.replace(replacement, target)  # another inode
    changed()
    os.rename(tree / "link", tree / "link2")  # a name
    changed()
    os.chmod(tree / "sub", 0o700)  # a mode
    changed()
    (tree / "sub" / "added.txt").write_text("below\n")  # a name added below changes the child's mtime
    changed()
    before = c_signature(tree)[0]
    (tree / "sub" / "inner.txt").write_text("edited\n")  # an edit below does not: the child's own scan sees it
    assert c_signature(tree)[0] == before


def test_a_packed_listing_gives_back_its_children() -> None:
    children = [
        ("b", 0o100644, 5, 10, 11, 7),
        (os.fsdecode(b"\xff"), 0o040755, 4096, -3, 12, 2**64 - 1),
        ("a", -1),  # not vouched for
    ]
    packed = pack_listing(children)
    assert unpack_listing(packed) == [children[2], children[0], children[1]]
    assert pack_listing([("a", 0o100644, 0, 0, 0, 0)]) not in (pack_listing([("a", -1)]), b"")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's own are the owner's only)."""
    path = Path(tempfile.mkdtemp(prefix="rokscan-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for inner in path.rglob("*"):
            if inner.is_dir() and not inner.is_symlink():
                inner.chmod(0o755)
        subprocess.run(["rm", "-rf", str(path)], check=True)


def probe(names: list[str]) -> dict[str, dict[str, list[object] | int]]:
    """Scan each directory as an unprivileged user (in a forked child when root), next to the Python path."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no return from here
        code = 1
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            out: dict[str, dict[str, list[object] | int]] = {}
            for name in names:
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY)  # the walker opens each directory first
                except OSError as error:
                    try:
                        os.listdir(name)
                    except OSError as listed:
                        out[name] = {"c": [error.errno, error.strerror], "python": [listed.errno, listed.strerror]}
                    continue
                _, files, _, _, failures = rokscan.scan(fd)
                python: list[object] = []
                for child in sorted(os.listdir(fd)):
                    try:
                        os.lstat(child, dir_fd=fd)
                    except OSError as error:
                        python.append([child, error.errno])
                out[name] = {"failures": [list(f) for f in failures], "python": python, "files": files}
            os.write(write, json.dumps(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)


def test_an_unreadable_directory_and_unstattable_children_fail_as_in_python(shared_dir: Path) -> None:
    unreadable = shared_dir / "unreadable"
    unreadable.mkdir()
    (unreadable / "hidden").write_text("x")
    unreadable.chmod(0o711)  # searchable, not listable by others
    searchless = shared_dir / "searchless"
    searchless.mkdir()
    for name in ("one", "two"):
        (searchless / name).write_text("x")
    searchless.chmod(0o744)  # listable by others, but its children cannot be stat'ed
    out = probe([str(unreadable), str(searchless)])
    assert out[str(unreadable)]["c"] == out[str(unreadable)]["python"]
    assert out[str(unreadable)]["c"][0] == 13  # EACCES
    assert out[str(searchless)]["failures"] == out[str(searchless)]["python"] == [["one", 13], ["two", 13]]
    assert out[str(searchless)]["files"] == 0


async def test_a_cache_the_python_path_wrote_is_reused_by_the_c_scan_and_back(
    repo: Repository, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both paths pack the same listing: an unchanged tree is reused across them, a change is seen by both."""
    monkeypatch.setattr(walker, "scan", None)
    first = await snapshot(repo, source)
    monkeypatch.setattr(walker, "scan", rokscan.scan)
    again = await snapshot(repo, source)
    assert again.files_opened == 0
    root = (await repo.load_record(first.snapshot_id)).tree
    assert (await repo.load_record(again.snapshot_id)).tree == root
    with open(source / "dir" / "big.bin", "ab") as f:
        f.write(b"!")
    time.sleep(0.06)  # past the racy window, as in conftest.settle
    monkeypatch.setattr(walker, "scan", None)
    changed = await snapshot(repo, source)
    assert changed.files_opened == 1
    changed_root = (await repo.load_record(changed.snapshot_id)).tree
    assert changed_root != root
    monkeypatch.setattr(walker, "scan", rokscan.scan)
    last = await snapshot(repo, source)
    assert last.files_opened == 0
    assert (await repo.load_record(last.snapshot_id)).tree == changed_root


async def test_a_same_directory_changed_before_its_entries_are_built_is_snapshotted_as_it_is_then(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same_tree: Callable[[Path, Path], None]
) -> None:
    """The scan found the root same, then a file in it changed before its entries were built (a change below
    it makes the root's tree be encoded again): the file is read, and read again next time."""
    volume = tmp_path / "volume"
    (volume / "below").mkdir(parents=True)
    (volume / "below" / "deep.txt").write_text("deep\n")
    (volume / "top.txt").write_text("top\n")
    time.sleep(0.06)  # past the racy window, as in conftest.settle
    await snapshot(repo, volume)
    (volume / "below" / "deep.txt").write_text("deeper\n")  # the root's own listing does not change
    time.sleep(0.06)
    build = walker.Walker.materialize

    def changing_first(self: walker.Walker, skip: Mapping[str, bytes]) -> None:
        with open(volume / "top.txt", "a") as f:
            f.write("appended while the snapshot ran\n")
        build(self, skip)

    monkeypatch.setattr(walker.Walker, "materialize", changing_first)
    during = await snapshot(repo, volume)
    assert during.files_opened == 2  # deep.txt, and top.txt whose stat is no longer the cached one
    monkeypatch.setattr(walker.Walker, "materialize", build)
    target = tmp_path / "restored"
    await restore(repo, during.snapshot_id, target)
    same_tree(volume, target)
    time.sleep(0.06)
    after = await snapshot(repo, volume)
    assert after.files_opened == 1  # top.txt changed within the racy window of the last one: read again
    assert (await repo.load_record(after.snapshot_id)).tree == (await repo.load_record(during.snapshot_id)).tree
