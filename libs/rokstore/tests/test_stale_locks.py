"""Stale locks are shown by ``rok repo locks`` and removed by ``rok repo unlock``; held ones only with --remove-all."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from rokstore import Repository, list_locks, remove_locks

ROK = [sys.executable, "-c", "from rokcli import main; main()"]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def _dead_lock(repo: Repository, kind: str) -> str:
    key = f"locks/{kind}-{os.urandom(12).hex()}"
    body = {"kind": kind, "host": socket.gethostname(), "pid": _dead_pid(), "time": time.time()}
    await repo.backend.put(key, json.dumps(body).encode())
    return key


async def test_a_lock_of_a_process_that_is_gone_is_stale_and_unlock_removes_only_it(repo: Repository) -> None:
    dead = await _dead_lock(repo, "shared")  # (an exclusive one would hold up the next lock for 2 × lease)
    held = await repo.lock("shared")
    try:
        locks = {lock.key: lock for lock in await list_locks(repo.backend)}
        assert set(locks) == {dead, held.key}
        assert locks[dead].stale.startswith(f"process {locks[dead].pid} on {socket.gethostname()} is gone")
        assert locks[dead].kind == "shared"
        assert locks[held.key].stale == "" and locks[held.key].pid == os.getpid()
        assert [lock.key for lock in await remove_locks(repo.backend)] == [dead]
        assert [lock.key for lock in await list_locks(repo.backend)] == [held.key]
        assert [lock.key for lock in await remove_locks(repo.backend, remove_all=True)] == [held.key]
        assert await list_locks(repo.backend) == []
    finally:
        await held.release()


async def test_locks_and_unlock_on_the_command_line(file_repo_url: str) -> None:
    from rokstore import init_repository

    async with await init_repository(file_repo_url) as repo:
        old = "locks/shared-" + "ab" * 12
        await repo.backend.put(old, json.dumps({"kind": "shared", "host": "elsewhere", "pid": 1}).encode())
        path = Path(file_repo_url.removeprefix("file://")) / old
        os.utime(path, (time.time() - 1000, time.time() - 1000))  # not refreshed for longer than 2 × lease
        held = await repo.lock("shared")
        try:

            def rok(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run([*ROK, "repo", *args, "--repo", file_repo_url], capture_output=True, text=True)

            shown = rok("locks")
            assert shown.returncode == 0, shown.stderr
            lines = shown.stdout.splitlines()
            assert any(
                re.search(rf"{old} .* stale: not refreshed for 1\d\d\ds \(the lease is 120s\)$", x) for x in lines
            )
            assert any(held.key in line and line.endswith("held") for line in lines)
            unlocked = rok("unlock")
            assert unlocked.returncode == 0 and f"removed {old}" in unlocked.stdout
            assert "1 locks removed" in unlocked.stdout
            assert [lock["key"] for lock in json.loads(rok("locks", "--json").stdout)] == [held.key]
            assert "1 locks removed" in rok("unlock", "--remove-all").stdout
        finally:
            await held.release()
