"""A restored file that is one chunk is made in one call (rokscan.write_new, the GIL released once): the same file
as the Python path makes, the same refusals, and nothing written through a swapped directory."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import rokscan
from rokstore import confined
from rokstore.confined import ConfinedTree
from rokstore.errors import RestoreFailed, TargetChanged

BEFORE_1970 = -1_234_567_891  # ns: a time the C path must floor as os.utime does


@pytest.fixture(params=["c", "python"])
def tree(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConfinedTree]:
    if request.param == "python":
        monkeypatch.setattr(confined, "_write_new", None)
    else:
        assert confined._write_new is rokscan.write_new
    (tmp_path / "root" / "sub").mkdir(parents=True)
    fd = os.open(tmp_path / "root", confined.O_DIR)
    try:
        yield ConfinedTree(fd, str(tmp_path / "root"))
    finally:
        os.close(fd)


def described(path: Path) -> tuple[bytes, int, int, int, int]:
    st = os.lstat(path)
    return path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid, st.st_gid


@pytest.mark.parametrize("mtime", [1_600_000_000_123_456_789, BEFORE_1970, 0])
def test_the_file_is_written_with_its_metadata(tree: ConfinedTree, tmp_path: Path, mtime: int) -> None:
    owner = (1234, 5678) if os.geteuid() == 0 else None
    data = b"one chunk\n" * 1000
    written = tree.write_new("sub/file.txt", memoryview(data), 0o640, owner, mtime)
    assert stat.S_ISREG(written.st_mode) and written.st_size == len(data) and written.problems == []
    got = described(tmp_path / "root" / "sub" / "file.txt")
    assert got[:3] == (data, 0o640, mtime)
    if owner is not None:
        assert got[3:] == owner


def test_both_paths_make_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = {}
    for way in ("c", "python"):
        if way == "python":
            monkeypatch.setattr(confined, "_write_new", None)
        root = tmp_path / way
        root.mkdir()
        fd = os.open(root, confined.O_DIR)
        try:
            ConfinedTree(fd, str(root)).write_new("f", b"\x00\xffdata", 0o4755, None, BEFORE_1970)
        finally:
            os.close(fd)
        made[way] = described(root / "f")
    assert made["c"] == made["python"]
    assert made["c"][1] == 0o4755  # the mode as given: set-uid is the caller's to clear or keep


def test_an_existing_name_is_never_written_over(tree: ConfinedTree, tmp_path: Path) -> None:
    (tmp_path / "root" / "sub" / "there.txt").write_text("kept\n")
    with pytest.raises(RestoreFailed, match=r"cannot create 'sub/there.txt'.*File exists"):
        tree.write_new("sub/there.txt", b"new", 0o644, None, 0)
    assert (tmp_path / "root" / "sub" / "there.txt").read_text() == "kept\n"


def test_a_directory_swapped_for_a_symlink_is_not_written_through(tree: ConfinedTree, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "root" / "sub").rmdir()
    (tmp_path / "root" / "sub").symlink_to(outside)
    with pytest.raises(TargetChanged):
        tree.write_new("sub/file.txt", b"secret", 0o644, None, 0)
    assert list(outside.iterdir()) == []


def test_a_file_made_as_the_link_name_is_refused(tree: ConfinedTree, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("theirs\n")
    (tmp_path / "root" / "sub" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RestoreFailed, match="cannot create"):
        tree.write_new("sub/link", b"ours", 0o644, None, 0)
    assert (tmp_path / "elsewhere").read_text() == "theirs\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file another owner needs root")
def test_a_set_uid_file_given_another_owner_keeps_its_mode(tree: ConfinedTree, tmp_path: Path) -> None:
    """A chown clears set-uid and set-gid: the mode is given after the owner."""
    tree.write_new("tool", b"#!/bin/sh\n", 0o6755, (1234, 5678), 0)
    assert described(tmp_path / "root" / "tool")[1:] == (0o6755, 0, 1234, 5678)
