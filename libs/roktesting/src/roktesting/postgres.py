"""A PostgreSQL database per test: on the local server when one answers, else in a throwaway cluster.

The throwaway cluster is made with ``initdb`` and ``pg_ctl`` from Debian's ``postgresql`` package (found in
``/usr/lib/postgresql/<version>/bin``), listening on loopback only. With neither, the tests fail and say
what to install.
"""

from __future__ import annotations

import asyncio
import getpass
import glob
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from roktesting.ports import free_port, wait_for_port

INSTALL_HINT = (
    "PostgreSQL is needed: start a local server on 127.0.0.1:5432, or install the binaries "
    "(`apt-get install postgresql`) so that a throwaway cluster can be made with initdb"
)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


async def _try_connect(dsn: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


class _Cluster:
    """A throwaway cluster owned by the test session."""

    def __init__(self, root: Path) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.pg_ctl = pg_ctl
        self.data = root / "data"
        self.port = free_port()
        user = "postgres" if os.geteuid() == 0 else getpass.getuser()
        self.user = user
        run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if run_as:
            shutil.chown(root, "postgres")
        subprocess.run(
            [*run_as, initdb, "-D", str(self.data), "-U", user, "-A", "trust"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *run_as,
                pg_ctl,
                "-D",
                str(self.data),
                "-l",
                str(root / "log"),
                "-w",
                "start",
                "-o",
                f"-h 127.0.0.1 -p {self.port} -k {root}",
            ],
            check=True,
            capture_output=True,
        )
        self.run_as = run_as
        wait_for_port(self.port, what="PostgreSQL")

    def stop(self) -> None:
        subprocess.run(
            [*self.run_as, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"], capture_output=True
        )


@contextmanager
def postgres_server_at(root: Path) -> Iterator[str]:
    """The DSN of a PostgreSQL server's maintenance database: the local server's, else a throwaway cluster's."""
    local = os.environ.get("ROK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    if asyncio.run(_try_connect(local)):
        yield local
        return
    cluster = _Cluster(root)
    try:
        yield f"postgresql://{cluster.user}@127.0.0.1:{cluster.port}/postgres"
    finally:
        cluster.stop()


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new, empty database on ``server`` (a maintenance DSN), dropped afterwards."""
    import asyncpg

    name = f"rok_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The DSN of a PostgreSQL server's maintenance database (``postgresql://user@host:port/db``)."""
    with postgres_server_at(tmp_path_factory.mktemp("pg")) as dsn:
        yield dsn


@pytest.fixture
def postgres_dsn(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    with fresh_database(postgres_server) as dsn:
        yield dsn
