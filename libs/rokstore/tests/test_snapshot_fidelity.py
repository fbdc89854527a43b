"""A snapshot restores as the same tree: content, types, modes, owners, ns mtimes, xattrs, links, holes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rokstore import Repository, diff, restore, snapshot


async def test_restore_gives_back_the_same_tree(repo: Repository, source: Path, tmp_path: Path, same_tree) -> None:
    os.setxattr(source / "small.txt", "user.origin", b"notebook")
    os.setxattr(source / "dir", "user.kind", b"\x00binary\xff")
    os.chown(source / "dir" / "deeper" / "note.md", 1234, 5678)
    os.mkfifo(source / "pipe")
    stats = await snapshot(repo, source)
    target = tmp_path / "out"
    restored = await restore(repo, stats.snapshot_id, target)
    same_tree(source, target)
    assert restored.files == stats.files == 5
    assert not stats.incomplete


async def test_hard_links_come_back_as_links(repo: Repository, source: Path, tmp_path: Path) -> None:
    stats = await snapshot(repo, source)
    await restore(repo, stats.snapshot_id, tmp_path / "out")
    a, b = os.stat(tmp_path / "out" / "small.txt"), os.stat(tmp_path / "out" / "dir" / "hardlink.txt")
    assert a.st_ino == b.st_ino
    assert a.st_nlink == 2


async def test_symlinks_are_stored_as_links_not_followed(repo: Repository, source: Path, tmp_path: Path) -> None:
    stats = await snapshot(repo, source)
    await restore(repo, stats.snapshot_id, tmp_path / "out")
    assert os.readlink(tmp_path / "out" / "link") == "dir/big.bin"
    assert os.readlink(tmp_path / "out" / "dangling") == "/nonexistent/target"
    assert stat.S_ISLNK(os.lstat(tmp_path / "out" / "link").st_mode)


async def test_sparse_file_restores_sparse_and_identical(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "sparse-src"
    src.mkdir()
    with open(src / "disk.img", "wb") as f:
        f.truncate(64 << 20)
        f.seek(10 << 20)
        f.write(b"data in the middle" * 1000)
        f.seek((64 << 20) - 5)
        f.write(b"end!!")
    stats = await snapshot(repo, src)
    assert stats.bytes_scanned == 64 << 20
    assert stats.bytes_read < 1 << 20  # the holes were not read
    await restore(repo, stats.snapshot_id, tmp_path / "out")
    out = tmp_path / "out" / "disk.img"
    assert out.read_bytes() == (src / "disk.img").read_bytes()
    assert os.stat(out).st_blocks * 512 < 4 << 20


async def test_empty_files_and_directories_survive(repo: Repository, source: Path, tmp_path: Path) -> None:
    stats = await snapshot(repo, source)
    await restore(repo, stats.snapshot_id, tmp_path / "out")
    assert (tmp_path / "out" / "empty").read_bytes() == b""
    assert list((tmp_path / "out" / "empty-dir").iterdir()) == []


async def test_unreadable_file_is_reported_and_marks_snapshot_incomplete(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    secret = source / "secret"
    secret.write_text("x")
    # Root reads everything; a file that vanishes between listing and reading is the same failure.
    os.chmod(secret, 0)
    real_open = os.open

    def failing_open(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith("/secret"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    os.open = failing_open  # type: ignore[assignment]
    try:
        stats = await snapshot(repo, source)
    finally:
        os.open = real_open  # type: ignore[assignment]
    assert stats.incomplete
    assert stats.errors == ["secret: Permission denied"]
    infos = await repo.list_snapshots()
    assert infos[0].incomplete
    await restore(repo, stats.snapshot_id, tmp_path / "out")
    assert not (tmp_path / "out" / "secret").exists()
    assert (tmp_path / "out" / "small.txt").read_text() == "hello\n"


async def test_sockets_are_skipped_with_a_warning(repo: Repository, source: Path, tmp_path: Path) -> None:
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(source / "control.sock"))
    try:
        stats = await snapshot(repo, source)
    finally:
        sock.close()
    assert any("control.sock" in w for w in stats.warnings)
    assert not stats.incomplete


async def test_device_files_are_recorded_and_restored_only_when_asked(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    os.mknod(source / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    stats = await snapshot(repo, source)
    by_default = await restore(repo, stats.snapshot_id, tmp_path / "default")
    assert not os.path.lexists(tmp_path / "default" / "null")
    assert [w for w in by_default.warnings if w.startswith("null:")] == [
        "null: device file skipped (restore with --devices to create it)"
    ]
    await restore(repo, stats.snapshot_id, tmp_path / "out", devices=True)
    st = os.lstat(tmp_path / "out" / "null")
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == os.makedev(1, 3)
    original = os.lstat(source / "null")
    assert (st.st_mode, st.st_mtime_ns) == (original.st_mode, original.st_mtime_ns)


async def test_diff_lists_added_removed_and_changed_paths(repo: Repository, source: Path) -> None:
    a = await snapshot(repo, source)
    (source / "new.txt").write_text("new")
    (source / "empty").unlink()
    (source / "dir" / "deeper" / "note.md").write_text("changed")
    b = await snapshot(repo, source)
    changes = await diff(repo, a.snapshot_id[:8], b.snapshot_id)
    assert changes.added == ["new.txt"]
    assert changes.removed == ["empty"]
    assert "dir/deeper/note.md" in changes.changed
    assert "small.txt" not in changes.changed
