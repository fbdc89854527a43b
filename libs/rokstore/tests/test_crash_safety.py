"""A `rok snapshot create` killed with SIGKILL leaves a valid repository; the next snapshot works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rokstore import check, collect_garbage, init_repository, open_repository, restore, snapshot

ROK = [sys.executable, "-c", "from rokcli import main; main()"]


def _count(root: Path, sub: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root / sub))


def _kill_when(proc: subprocess.Popen, ready) -> bool:  # type: ignore[no-untyped-def]
    """SIGKILL the process as soon as ready() holds; False if it finished first."""
    while proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.001)
    return False


@pytest.mark.parametrize("moment", ["after-first-pack", "after-index"])
async def test_snapshot_killed_at_any_moment_leaves_a_valid_repository(
    tmp_path: Path, moment: str, same_tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROK_LOCK_LEASE", "1")  # the killed writer's lock goes stale after 2 s, for gc below
    repo_dir = tmp_path / "repo"
    url = f"file://{repo_dir}"
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "a.txt").write_text("earlier snapshot")
    volume = tmp_path / "volume"
    volume.mkdir()
    for i in range(6):
        (volume / f"blob{i}.bin").write_bytes(os.urandom(12 << 20))
    async with await init_repository(url) as repo:
        first = await snapshot(repo, earlier)
    packs_before = _count(repo_dir, "packs")
    index_before = _count(repo_dir, "index")
    env = {**os.environ, "ROK_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([*ROK, "snapshot", "create", str(volume), "--repo", url, "--json"], env=env)  # noqa: ASYNC220
    if moment == "after-first-pack":
        killed = _kill_when(proc, lambda: _count(repo_dir, "packs") > packs_before)
    else:
        killed = _kill_when(proc, lambda: _count(repo_dir, "index") > index_before)
    assert proc.returncode != 0 or not killed
    async with await open_repository(url) as repo:
        report = await check(repo, read_data=True)
        assert report.ok, report.problems
        await restore(repo, first.snapshot_id[:12], tmp_path / "out-earlier")
        same_tree(earlier, tmp_path / "out-earlier")
        stats = await snapshot(repo, volume, cache_dir=tmp_path / "cache")
        await restore(repo, stats.snapshot_id, tmp_path / "out-volume")
        same_tree(volume, tmp_path / "out-volume")
        assert (await check(repo)).ok
        await collect_garbage(repo)
        after_gc = await check(repo, read_data=True)
        assert after_gc.ok and not after_gc.notes  # gc removed the crash's leftovers


async def test_stale_lock_of_a_killed_writer_does_not_block_gc_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROK_LOCK_LEASE", "0.2")
    url = f"file://{tmp_path / 'repo'}"
    async with await init_repository(url) as repo:
        # A lock left behind by a process that died: nobody refreshes it.
        await repo.backend.put("locks/shared-deadbeef", b"{}")
        old = time.time() - 10
        os.utime(tmp_path / "repo" / "locks" / "shared-deadbeef", (old, old))
        report = await collect_garbage(repo)
        assert report.snapshots == 0
        assert await repo.backend.list("locks/") == []
