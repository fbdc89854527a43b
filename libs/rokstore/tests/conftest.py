"""Fixtures for the store engine's tests: a repository URL on each backend and trees to snapshot."""

from __future__ import annotations

import json
import os
import random
import stat
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import blake3
import pytest
from rokstore import Repository, init_repository
from rokstore.repository.index import encode_index, index_key
from rokstore.repository.manifest import snapshot_key
from rokstore.repository.packs import build_pack, pack_key

Forge = Callable[[Repository, list[dict[str, Any]]], Awaitable[str]]


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


async def forge_snapshot(repo: Repository, entries: list[dict[str, Any]]) -> str:
    """Store hand-crafted trees and a snapshot record pointing at them; return the snapshot id.

    Each entry goes into its parent directory's tree; one whose path names no directory of the snapshot goes
    into the root's tree under its whole path as its name — as a hostile writer could store it.
    """
    dirs = {e["p"] for e in entries if e["t"] == "d"}
    children: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for entry in entries[1:]:
        parent, _, name = entry["p"].rpartition("/")
        if (parent or ".") not in dirs:
            parent, name = "", entry["p"]
        children[parent or "."].append((name, entry))
    blobs: list[tuple[bytes, bytes, int, int]] = []

    def build(directory: str) -> bytes:
        tree = []
        for name, entry in children[directory]:
            child = {k: v for k, v in entry.items() if k != "p"} | {"n": name}
            if entry["t"] == "d":
                child["tree"] = build(entry["p"]).hex()
            tree.append(child)
        # the wire format itself (what a hostile writer stores), not the typed entries encode_tree takes
        data = json.dumps({"entries": tree}, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
        tree_id = blake3.blake3(data).digest()
        blobs.append((tree_id, data, len(data), 0))
        return tree_id

    root = build(".")
    pack = build_pack(blobs)
    await repo.backend.put(pack_key(pack.pack_id), pack.data)
    index_id, data = encode_index([(pack.pack_id, pack.blobs)])
    await repo.backend.put(index_key(index_id), data)
    record = {
        "version": 2,
        "tree": root.hex(),
        "root": {k: v for k, v in entries[0].items() if k not in ("p", "t")},
        "time": "2026-01-01T00:00:00+00:00",
        "hostname": "evil",
        "path": "/x",
        "tags": {},
        "files": 1,
        "dirs": 1,
        "bytes": 0,
        "bytes_new": 0,
        "incomplete": False,
        "errors": [],
        "index": [index_id],
    }
    data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()  # the wire format, as stored
    snapshot_id = blake3.blake3(data).hexdigest()
    await repo.backend.put(snapshot_key(snapshot_id), data)
    return snapshot_id


@pytest.fixture
def forge() -> Forge:
    """Store a hand-crafted snapshot (as a hostile writer could): ``await forge(repo, entries)`` → its id."""
    return forge_snapshot
