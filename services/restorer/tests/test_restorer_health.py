"""The restorer's readiness follows its object store: ready while the S3 server answers, failing naming the
store once it is gone."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from rok_restorer.main import build
from rok_restorer.settings import RestorerSettings
from rokstore import init_repository
from roktesting.health import until_ready
from roktesting.nats import NatsServer, running
from roktesting.s3 import serve_s3


async def test_readiness_fails_naming_the_store_when_the_s3_server_stops(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "s3" / "rok").mkdir(parents=True)
    with ExitStack() as s3_running:
        s3 = s3_running.enter_context(serve_s3(tmp_path / "s3"))
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        await (await init_repository("s3://rok/repo")).close()
        settings = RestorerSettings(
            nats_url=nats_server.url,
            state_dir=tmp_path / "state",
            log_format="text",
            repository="s3://rok/repo",
            health_cache=0,
        )
        service = build(settings)
        async with running(service):
            assert await until_ready(service.health, True) == {
                "nats": "ok",
                "nats-open": "ok",
                "consumers": "ok",
                "store": "ok",
            }
            s3_running.close()  # the S3 server stops
            checks = await until_ready(service.health, False)
            assert [name for name, outcome in checks.items() if outcome != "ok"] == ["store"]
            assert s3.endpoint in checks["store"] or "no answer within" in checks["store"], checks
            assert (await service.health.live()).ok
