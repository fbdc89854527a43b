"""The e2e fixture: every service its own process, on real servers (see system.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rokcommon.testing.nats import NatsServer
from rokcommon.testing.ports import free_port
from rokcommon.testing.s3 import S3Server

from .system import NODE, System


@pytest.fixture
async def system(
    nats_server: NatsServer, s3_server: S3Server, s3_repo_url: str, postgres_dsn: str, tmp_path: Path
) -> AsyncIterator[System]:
    """The services, not started yet (``await system.start()``); killed at the end whatever happened."""
    spans = tmp_path / "spans.jsonl"
    env = {
        "ROK_NATS_URL": nats_server.url,
        "ROK_REPOSITORY": s3_repo_url,
        **s3_server.env(),
        "ROK_DATABASE_URL": postgres_dsn,
        "ROK_NODE_NAME": NODE,
        "ROK_OTEL_FILE": str(spans),
        "ROK_REGISTRY_PORT": str(free_port()),
        "ROK_LOG_FORMAT": "json",
        "ROK_LOG_LEVEL": "INFO",
        # short delays, so that a redelivery after a crash or an outage comes within the test's patience
        "ROK_ACK_WAIT": "3",
        "ROK_RETRY_DELAY": "0.3",
    }
    bucket, prefix = s3_repo_url.removeprefix("s3://").split("/", 1)
    system = System(tmp_path, nats_server, env, spans, s3_server.root / bucket / prefix)
    try:
        yield system
    finally:
        await system.close()
