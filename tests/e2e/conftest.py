"""The e2e fixtures: every service its own process, on real servers (see system.py).

``system`` is a fresh, unstarted system for one test (the fault tests break it on purpose); ``shared_system`` is
one started system for a whole module of tests that only use it (each plays its own run), since starting the
three processes is most of an e2e test's time.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from roktesting.nats import NatsServer
from roktesting.ports import free_port
from roktesting.s3 import S3Server

from .system import NODE, System


def make_system(root: Path, nats: NatsServer, s3: S3Server, bucket: str, database: str) -> System:
    (s3.root / bucket).mkdir()
    spans = root / "spans.jsonl"
    env = {
        "ROK_NATS_URL": nats.url,
        "ROK_REPOSITORY": f"s3://{bucket}/repo",
        **s3.env(),
        "ROK_DATABASE_URL": database,
        "ROK_NODE_NAME": NODE,
        "ROK_VOLUME_ROOTS": str(root.parent),  # pytest's base temporary directory: every test's volumes are in it
        "ROK_OTEL_FILE": str(spans),
        "ROK_REGISTRY_PORT": str(free_port()),
        "ROK_LOG_FORMAT": "json",
        "ROK_LOG_LEVEL": "INFO",
        # short delays, so that a redelivery after a crash or an outage comes within the test's patience
        "ROK_ACK_WAIT": "3",
        "ROK_RETRY_DELAY": "0.3",
    }
    return System(root, nats, env, spans, s3.root / bucket / "repo")


@pytest.fixture
async def system(
    nats_server: NatsServer, s3_server: S3Server, postgres_dsn: str, tmp_path: Path
) -> AsyncIterator[System]:
    """The services, not started yet (``await system.start()``); killed at the end whatever happened."""
    system = make_system(tmp_path, nats_server, s3_server, f"rok-{secrets.token_hex(6)}", postgres_dsn)
    try:
        yield system
    finally:
        await system.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_system(
    s3_server: S3Server, postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    """One started system for the module's tests, on its own nats-server, bucket and database."""
    root = tmp_path_factory.mktemp("e2e")
    nats = NatsServer(root / "nats")
    nats.start()
    database = f"rok_e2e_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server)
    await admin.execute(f'CREATE DATABASE "{database}"')
    system = make_system(
        root, nats, s3_server, f"rok-{secrets.token_hex(6)}", postgres_server.rsplit("/", 1)[0] + f"/{database}"
    )
    try:
        await system.start()
        yield system
    finally:
        await system.close()
        nats.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
