"""A real ``nats-server -js`` per test, on a free loopback port with a temporary store.

The server can be stopped and started again on the same port and store, so tests can restart it mid-stream.
Chain: ``nats_server`` → ``nc`` (a nats-py client) → ``js`` (JetStream with rok's streams declared).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from rokcommon import permissions
from rokcommon.service import Service
from rokcommon.streams import ensure_streams

from roktesting.ports import free_port, wait_for_port

__all__ = [
    "ADMIN",
    "SMALL_MAX_PAYLOAD",
    "NatsServer",
    "UsersNats",
    "js",
    "nats_env",
    "nats_server",
    "nats_with_users",
    "nc",
    "running",
    "small_payload_nats",
    "small_payload_server",
]

INSTALL_HINT = "nats-server is not installed: run `make setup` (or `apt-get install nats-server`)"


class NatsServer:
    def __init__(self, store_dir: Path, port: int | None = None, *, config: Path | None = None) -> None:
        """``config``: a nats-server configuration file (e.g. users and permissions); flags override its listen."""
        binary = shutil.which("nats-server")
        if binary is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.binary = binary
        self.store_dir = store_dir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = ["-c", str(config)] if config else []  # e.g. cluster routes
        self.log = store_dir.parent / f"nats-{self.port}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                self.binary,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.store_dir),
                "-l",
                str(self.log),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, what="nats-server")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A fresh JetStream server; ``nats_server.restart()`` keeps its port and its store."""
    root = tmp_path_factory.mktemp("nats")
    server = NatsServer(root / "store")
    server.start()
    yield server
    server.stop()


SMALL_MAX_PAYLOAD = 64 * 1024  # a limit small enough that a test reaches it quickly


def small_payload_server(root: Path, max_payload: int = SMALL_MAX_PAYLOAD) -> NatsServer:
    """A JetStream server (not started) whose ``max_payload`` is ``max_payload`` bytes instead of 1 MiB."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "max-payload.conf"
    config.write_text(f"max_payload: {max_payload}\n")
    return NatsServer(root / "store", config=config)


@pytest.fixture
def small_payload_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A JetStream server whose ``max_payload`` is :data:`SMALL_MAX_PAYLOAD` (64 KiB)."""
    server = small_payload_server(tmp_path_factory.mktemp("nats-small"))
    server.start()
    yield server
    server.stop()


ADMIN = "admin"  # a test-only user that may do anything, to set up and inspect


class UsersNats(NatsServer):
    """A nats-server that requires rok's users (:mod:`rokcommon.permissions`), each with a random password."""

    def __init__(self, root: Path, users: tuple[permissions.Permissions, ...]) -> None:
        import secrets

        admin = permissions.Permissions(ADMIN, "test set-up", (">",), (">",))
        self.passwords = {p.user: secrets.token_urlsafe(16) for p in (*users, admin)}
        config = root / "auth.conf"
        config.write_text(permissions.render((*users, admin), self.passwords))
        super().__init__(root / "store", config=config)

    async def connect(self, user: str, **options: object) -> Client:
        """A client logged in as ``user``, with that user's inbox prefix."""
        return await nats.connect(
            self.url,
            user=user,
            password=self.passwords[user],
            inbox_prefix=permissions.inbox_prefix(user),
            max_reconnect_attempts=1,
            **options,
        )


@pytest.fixture
def nats_with_users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UsersNats]:
    """A JetStream server with every local rok user and an ``admin``; ``nats_with_users.passwords[user]``."""
    server = UsersNats(tmp_path_factory.mktemp("nats-users"), permissions.table(permissions.LOCAL_USERS))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_env(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point ``ROK_NATS_URL`` (and so every RokSettings) at the test's server."""
    monkeypatch.setenv("ROK_NATS_URL", nats_server.url)
    return nats_server.url


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    yield client
    await client.close()


@pytest.fixture
async def js(nc: Client) -> JetStreamContext:
    """JetStream with every rok stream declared."""
    context = nc.jetstream()
    await ensure_streams(context)
    return context


@asynccontextmanager
async def running(service: Service) -> AsyncIterator[Service]:
    """Run a service's broker and consumers inside a test, as ``python -m rok_<name>`` would."""
    await service.declare()
    await service.broker.start()
    try:
        yield service
    finally:
        await service.broker.stop()
