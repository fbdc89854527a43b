"""How the store talks to storage: one S3 client per process and endpoint, a bound on the requests in flight, and
nothing of botocore for a local repository."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rokstore import init_repository, open_repository
from rokstore.repository.backends import s3


async def test_repositories_share_one_client_and_its_bound(s3_repo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "REQUESTS_IN_FLIGHT", 3)
    first = await init_repository(s3_repo_url)
    second = await open_repository(s3_repo_url)
    a, b = first.backend, second.backend
    assert isinstance(a, s3.S3Backend) and isinstance(b, s3.S3Backend)
    assert await a._c() is await b._c()
    await asyncio.gather(*(a.put(f"probe/{n}", b"x" * 1000) for n in range(10)))
    await asyncio.gather(*(x.get(f"probe/{n}") for n in range(10) for x in (a, b)))
    shared = a._shared
    assert shared is not None
    assert shared.peak == 3  # 30 requests at once from two repositories, never more than three in flight
    await first.close()
    assert shared.stack is not None and shared.users == 1
    assert await b.get("probe/0") == b"x" * 1000  # the other repository still uses the client
    await second.close()
    assert shared.users == 0
    third = await open_repository(s3_repo_url)  # a new client once the last one let go of it
    assert isinstance(third.backend, s3.S3Backend) and third.backend._shared is not shared
    await third.close()


def test_a_local_repository_never_imports_botocore(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_bytes(b"alpha\n" * 1000)
    (source / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4000)
    program = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from rokstore import init_repository, restore, snapshot

        async def main():
            repo = await init_repository("file://{tmp_path}/repo", cache_dir=Path("{tmp_path}/cache"))
            stats = await snapshot(repo, Path("{source}"))
            await restore(repo, stats.snapshot_id, Path("{tmp_path}/out"))
            await repo.close()

        asyncio.run(main())
        assert Path("{tmp_path}/out/sub/b.bin").read_bytes() == Path("{source}/sub/b.bin").read_bytes()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("botocore", "aiobotocore", "boto3", "aiohttp"))
        print(" ".join(loaded))
        """
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"a file:// snapshot and restore imported {done.stdout.strip()}"
