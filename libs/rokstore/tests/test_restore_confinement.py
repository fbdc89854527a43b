"""A restore cannot be redirected, a failed one leaves nothing that looks whole, and what it creates is asked for."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from rokstore import CorruptData, Repository, RestoreFailed, restore, snapshot
from rokstore.staging import Staging


def settle() -> None:
    time.sleep(0.06)  # past the racy window, as in conftest.settle


ROK = [sys.executable, "-c", "from rokcli import main; main()"]


def _wide_tree(root: Path) -> Path:
    for d in range(40):
        sub = root / f"d{d:02}" / "inner"
        sub.mkdir(parents=True)
        for f in range(50):
            (sub.parent / f"f{f}.txt").write_text(f"{d}/{f}\n" * 20)
            (sub / f"g{f}.txt").write_text(f"{d}/{f}/inner\n")
    settle()
    return root


class Attacker(threading.Thread):
    """Swaps every directory it finds under the restore's working trees for a symlink to ``outside``, in a
    loop, until stopped; it never touches anything else."""

    def __init__(self, parent: Path, target: Path, outside: Path) -> None:
        super().__init__(daemon=True)
        self.parent, self.target, self.outside = parent, target, outside
        self.stop = threading.Event()
        self.swapped: list[str] = []

    def roots(self) -> list[str]:
        found = [str(self.target)] if self.target.is_dir() else []
        try:
            found += [e.path for e in os.scandir(self.parent) if "rok-restore" in e.name]
        except OSError:
            pass
        return found

    def run(self) -> None:
        while not self.stop.is_set():
            for root in self.roots():
                for dirpath, dirnames, _ in os.walk(root):
                    for name in dirnames:
                        if name.endswith(".moved") or self.stop.is_set():
                            continue
                        path = os.path.join(dirpath, name)
                        try:
                            os.rename(path, path + ".moved")
                            os.symlink(self.outside, path)
                            self.swapped.append(os.path.relpath(path, root))
                        except OSError:
                            continue


async def test_a_restore_cannot_be_redirected_by_directories_swapped_for_symlinks(
    file_repo_url: str, tmp_path: Path, same_tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rokstore import init_repository

    source = _wide_tree(tmp_path / "src")
    outside = tmp_path / "outside"
    outside.mkdir()
    parent = tmp_path / "restores"
    parent.mkdir()
    commit, discard = Staging.commit, Staging.discard
    attackers: list[Attacker] = []

    def stop() -> None:
        attackers[-1].stop.set()
        attackers[-1].join()

    # The attack runs until the restore has decided: until its tree is put in place, or is to be removed.
    monkeypatch.setattr(Staging, "commit", lambda self, verify: (stop(), commit(self, verify)))
    monkeypatch.setattr(Staging, "discard", lambda self: (stop(), discard(self)))
    async with await init_repository(file_repo_url) as repo:
        stats = await snapshot(repo, source)
        outcomes = []
        for attempt in range(6):
            target = parent / f"out{attempt}"
            attacker = Attacker(parent, target, outside)
            attackers.append(attacker)
            attacker.start()
            try:
                await restore(repo, stats.snapshot_id, target)
                outcomes.append(None)
            except RestoreFailed as error:
                outcomes.append(str(error))
            finally:
                attacker.stop.set()
                attacker.join()
            assert list(outside.iterdir()) == [], f"the restore wrote outside its target: {list(outside.iterdir())}"
            if outcomes[-1] is None:
                same_tree(source, target)
            else:
                assert not os.path.lexists(target)  # nothing that looks whole
                assert [p for p in os.listdir(parent) if "rok-restore" in p] == []
                named = outcomes[-1].split("'")[1]
                assert named.split("/")[0] in {p.split("/")[0] for p in attacker.swapped}, outcomes[-1]
                assert "was changed while restoring" in outcomes[-1]
            if attacker.swapped:
                break
    assert any(a.swapped for a in attackers), "the attacker never got to swap a directory"


def test_a_snapshot_claiming_an_absurd_file_size_is_refused_in_one_line(
    file_repo_url: str, tmp_path: Path, forge: Callable[[Repository, list[dict]], Awaitable[str]]
) -> None:
    import asyncio

    from rokstore import init_repository

    async def forged() -> str:
        async with await init_repository(file_repo_url) as repo:
            root = {"p": ".", "t": "d", "m": 0o755, "u": 0, "g": 0, "mt": 0}
            huge = {"p": "huge", "t": "f", "m": 0o644, "u": 0, "g": 0, "mt": 0, "s": 1 << 62, "c": [[None, 1 << 62]]}
            return await forge(repo, [root, huge])

    snapshot_id = asyncio.run(forged())
    target = tmp_path / "out"
    result = subprocess.run(
        [*ROK, "snapshot", "restore", snapshot_id, "--repo", file_repo_url, "--to", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "'huge'" in line and str(1 << 62) in line
    assert not target.exists()


async def test_a_restore_with_a_damaged_chunk_names_it_and_leaves_nothing_behind(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    stats = await snapshot(repo, source)
    index = await repo.load_index()
    chunk, location = next((c, loc) for c, loc in index.chunks.items() if loc.raw_length > 1 << 20)
    key = f"packs/{location.pack.hex()[:2]}/{location.pack.hex()}"
    data = bytearray(await repo.backend.get(key))
    data[location.offset + location.length // 2] ^= 0xFF
    await repo.backend.put(key, bytes(data))

    new = tmp_path / "new"
    with pytest.raises(CorruptData, match=rf"chunk {chunk.hex()} .*'dir/big.bin'"):
        await restore(repo, stats.snapshot_id, new)
    assert not new.exists()
    existing = tmp_path / "mounted"  # an existing empty directory, as a volume's mount point is
    existing.mkdir()
    with pytest.raises(CorruptData, match=r"'dir/big\.bin'"):
        await restore(repo, stats.snapshot_id, existing)
    assert list(existing.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if "rok-restore" in p.name] == []


async def test_a_restore_into_an_existing_empty_directory_fills_it_and_gives_it_the_root_metadata(
    repo: Repository, source: Path, tmp_path: Path, same_tree
) -> None:
    os.chmod(source / "dir", 0o555)  # a read-only directory must still be moved into place
    os.chmod(source, 0o750)
    os.utime(source, ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    try:
        stats = await snapshot(repo, source)
    finally:
        os.chmod(source / "dir", 0o755)
    os.chmod(source / "dir", 0o555)
    target = tmp_path / "mounted"
    target.mkdir(mode=0o777)
    try:
        await restore(repo, stats.snapshot_id, target)
        same_tree(source, target)
        assert sorted(os.listdir(target)) == sorted(os.listdir(source))
    finally:
        os.chmod(source / "dir", 0o755)
        if (target / "dir").exists():
            os.chmod(target / "dir", 0o755)


async def test_set_uid_and_set_gid_bits_are_restored_only_when_asked(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    tool = source / "tool"
    tool.write_bytes(b"#!/bin/sh\n")
    os.chmod(tool, 0o6755)
    shared = source / "shared"
    shared.mkdir()
    os.chmod(shared, 0o2775)  # a group directory keeps its set-gid bit: it grants nothing
    settle()
    stats = await snapshot(repo, source)
    plain = await restore(repo, stats.snapshot_id, tmp_path / "plain")
    assert stat.S_IMODE(os.lstat(tmp_path / "plain" / "tool").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(tmp_path / "plain" / "shared").st_mode) == 0o2775
    assert "tool: set-uid/set-gid bits cleared (restore with --keep-setuid to keep them)" in plain.warnings
    await restore(repo, stats.snapshot_id, tmp_path / "kept", keep_setuid=True)
    assert stat.S_IMODE(os.lstat(tmp_path / "kept" / "tool").st_mode) == 0o6755


def test_the_restore_command_takes_devices_and_keep_setuid(file_repo_url: str, source: Path, tmp_path: Path) -> None:
    os.mknod(source / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(source / "small.txt", 0o4640)
    settle()
    subprocess.run([*ROK, "repo", "init", "--repo", file_repo_url], check=True, capture_output=True, timeout=60)
    created = subprocess.run(
        [*ROK, "snapshot", "create", str(source), "--repo", file_repo_url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    snapshot_id = json.loads(created.stdout)["snapshot_id"]
    out = tmp_path / "out"
    flags = ["--devices", "--keep-setuid", "--json"]
    restored = subprocess.run(
        [*ROK, "snapshot", "restore", snapshot_id, "--repo", file_repo_url, "--to", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert restored.returncode == 0, restored.stderr
    assert stat.S_ISCHR(os.lstat(out / "null").st_mode)
    assert stat.S_IMODE(os.lstat(out / "small.txt").st_mode) == 0o4640


async def test_a_chunk_that_did_not_reach_the_file_fails_the_read_back_naming_file_and_chunk(
    repo: Repository, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats = await snapshot(repo, source)
    real_pwrite = os.pwrite
    lost: list[int] = []

    def lossy_pwrite(fd: int, data: bytes, offset: int) -> int:  # a write the disk acknowledged but lost
        if not lost and len(data) > 1 << 20:
            lost.append(offset)
            return len(data)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr("rokstore.restorer.os.pwrite", lossy_pwrite)
    with pytest.raises(CorruptData, match=r"restored file 'dir/big\.bin' does not hold chunk [0-9a-f]{64} at offset"):
        await restore(repo, stats.snapshot_id, tmp_path / "out", verify=True)
    assert lost and not (tmp_path / "out").exists()


async def test_the_path_up_to_the_target_may_go_through_a_symlink(
    file_repo_url: str, source: Path, tmp_path: Path, same_tree
) -> None:
    from rokstore import TargetNotEmpty, init_repository

    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")
    async with await init_repository(file_repo_url) as repo:
        stats = await snapshot(repo, source)
        await restore(repo, stats.snapshot_id, tmp_path / "via" / "out")
        same_tree(source, tmp_path / "real" / "out")
        (tmp_path / "link-target").symlink_to(tmp_path / "real")
        with pytest.raises(TargetNotEmpty, match="is not a directory"):  # the target itself is never a symlink
            await restore(repo, stats.snapshot_id, tmp_path / "link-target")
