"""The snapshotter's readiness follows its store: failing naming the store while the repository is gone, ready
again once it is back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rok_snapshotter.main import build
from rok_snapshotter.repository import RepositoryHandle
from rok_snapshotter.settings import SnapshotterSettings
from roktesting.health import until_ready
from roktesting.nats import running


async def test_readiness_fails_naming_the_store_while_the_repository_is_gone_and_recovers(
    settings_for: Callable[..., SnapshotterSettings], tmp_path: Path
) -> None:
    repo_dir = tmp_path / "repo"
    settings = settings_for(repository=repo_dir.as_uri(), health_cache=0)
    handle = RepositoryHandle(settings.repository_url, cache_dir=settings.resolved_cache_dir)
    try:
        service = build(settings, repository=handle)
        async with running(service):
            assert await until_ready(service.health, True) == {
                "nats": "ok",
                "nats-open": "ok",
                "consumers": "ok",
                "store": "ok",
            }
            repo_dir.rename(tmp_path / "moved")  # the volume holding the repository is gone
            checks = await until_ready(service.health, False)
            assert [name for name, outcome in checks.items() if outcome != "ok"] == ["store"]
            assert checks["store"] == f"the rok repository at {repo_dir.as_uri()} is gone (no config object)"
            assert (await service.health.live()).ok

            (tmp_path / "moved").rename(repo_dir)
            assert (await until_ready(service.health, True))["store"] == "ok"
    finally:
        await handle.close()
