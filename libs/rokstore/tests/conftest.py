"""Fixtures for the store engine's tests: a repository URL on each backend and trees to snapshot."""

from __future__ import annotations

import os
import random
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rokstore import Repository, init_repository


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROK_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(params=["file", "s3"])
def repo_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return str(request.getfixturevalue("s3_repo_url"))
    return f"file://{tmp_path / 'repo'}"


@pytest.fixture
def file_repo_url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'repo'}"


@pytest.fixture
async def repo(repo_url: str) -> Repository:
    r = await init_repository(repo_url)
    yield r
    await r.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A small tree with a bit of everything a volume holds."""
    root = tmp_path / "src"
    (root / "dir" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "small.txt").write_text("hello\n")
    (root / "empty").write_bytes(b"")
    # the same bytes every run, so its chunk boundaries (and what the tests assert of them) never vary
    (root / "dir" / "big.bin").write_bytes(random.Random(3).randbytes(3 << 20) + b"tail" * 100000)
    (root / "dir" / "deeper" / "note.md").write_text("# note\n" * 50)
    (root / "link").symlink_to("dir/big.bin")
    (root / "dangling").symlink_to("/nonexistent/target")
    os.link(root / "small.txt", root / "dir" / "hardlink.txt")
    os.chmod(root / "small.txt", 0o640)
    os.chmod(root / "dir" / "deeper", 0o750)
    os.utime(root / "dir" / "deeper" / "note.md", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    settle()
    return root


def settle() -> None:
    """Let the files' ctimes age past the snapshot's 'racy' window (files changed within 50 ms of the start of a
    snapshot are read again next time, since a coarse timestamp could hide a later write)."""
    time.sleep(0.06)


def describe(root: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = os.lstat(path)
            item: dict[str, Any] = {
                "mode": st.st_mode,
                "uid": st.st_uid,
                "gid": st.st_gid,
                "xattrs": {
                    n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)
                },
            }
            if not stat.S_ISLNK(st.st_mode):
                item["mtime_ns"] = st.st_mtime_ns
            if stat.S_ISREG(st.st_mode):
                item["data"] = path.read_bytes()
                if st.st_nlink > 1:
                    item["linked_to"] = inodes.setdefault(st.st_ino, rel)
            elif stat.S_ISLNK(st.st_mode):
                item["target"] = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                item["rdev"] = st.st_rdev
            out[rel] = item
    return out


def assert_same_tree(a: Path, b: Path) -> None:
    da, db = describe(a), describe(b)
    assert sorted(da) == sorted(db)
    for rel in da:
        assert da[rel] == db[rel], rel
    ra, rb = os.lstat(a), os.lstat(b)
    assert (stat.S_IMODE(ra.st_mode), ra.st_mtime_ns) == (stat.S_IMODE(rb.st_mode), rb.st_mtime_ns)


@pytest.fixture
def same_tree() -> Callable[[Path, Path], None]:
    """assert_same_tree(a, b): content, types, modes, owners, ns mtimes, xattrs, links and hard links match."""
    return assert_same_tree
