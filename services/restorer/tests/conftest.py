"""Fixtures of the restorer's tests: a real repository with two snapshotted volumes, a real nats-server, the
restorer running in-process, and a registry stand-in that answers ``resolve`` on the real subject with the real
reply models (the registry service itself is exercised with the restorer in ``tests/e2e``)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

# The tests import their helpers by name (pytest's importlib mode puts no test directory on sys.path).
sys.path.insert(0, str(Path(__file__).parent))

from restorer_testkit import VERSION_URL, FakeRegistry, Outcomes, Stored, fill
from rok_restorer.main import build
from rok_restorer.settings import RestorerSettings
from rokcommon import subjects
from rokcommon.events import RestoreCompleted, RestoreFailed, RestoreProgress
from rokcommon.service import Service
from rokstore import init_repository, snapshot
from roktesting.nats import NatsServer, running


@pytest.fixture
async def stored(tmp_path: Path) -> Stored:
    """A file:// repository holding a snapshot of each of two volumes (workspace first)."""
    repo_dir = tmp_path / "repo"
    url = repo_dir.as_uri()
    volumes = {"workspace": fill(tmp_path / "vol-workspace", 1), "data": fill(tmp_path / "vol-data", 2)}
    snapshots = {}
    async with await init_repository(url, cache_dir=tmp_path / "cache") as repo:
        for name, path in volumes.items():
            snapshots[name] = (await snapshot(repo, path, tags={"volume": name})).snapshot_id
    return Stored(url, repo_dir, volumes, snapshots)


@pytest.fixture
async def registry(nc: Client, stored: Stored) -> AsyncIterator[FakeRegistry]:
    fake = FakeRegistry({VERSION_URL: stored.resolved()})
    sub = await nc.subscribe(subjects.registry_query("resolve"), cb=fake.on_resolve)
    await nc.flush()
    yield fake
    await sub.unsubscribe()


@pytest.fixture
def settings(nats_server: NatsServer, tmp_path: Path) -> RestorerSettings:
    return RestorerSettings(
        nats_url=nats_server.url,
        state_dir=tmp_path / "state",
        log_format="text",
        retry_delay=0.2,
        ack_wait=5.0,
        max_deliver=3,
        registry_timeout=0.5,
        restore_progress_interval=0.05,
    )


@pytest.fixture
async def restorer(settings: RestorerSettings, js: object) -> AsyncIterator[Service]:
    service = build(settings)
    async with running(service):
        yield service


@pytest.fixture
async def outcomes(nc: Client) -> AsyncIterator[Outcomes]:
    seen = Outcomes()

    async def on_completed(msg: Msg) -> None:
        seen.completed.append(RestoreCompleted.decode(msg.data))
        seen.arrived.set()

    async def on_failed(msg: Msg) -> None:
        seen.failed.append(RestoreFailed.decode(msg.data))
        seen.arrived.set()

    async def on_progress(msg: Msg) -> None:
        seen.progress.append(RestoreProgress.model_validate_json(msg.data))

    subs = [
        await nc.subscribe(subjects.RESTORE_COMPLETED, cb=on_completed),
        await nc.subscribe(subjects.RESTORE_FAILED, cb=on_failed),
        await nc.subscribe(f"{subjects.RESTORE_PROGRESS}.>", cb=on_progress),
    ]
    await nc.flush()
    yield seen
    for sub in subs:
        await sub.unsubscribe()
