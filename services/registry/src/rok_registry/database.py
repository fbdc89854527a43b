"""The SQL database: an async engine from a URL, and the schema migrated to the latest revision at start.

``postgresql://…`` (as PostgreSQL tools write it) runs on asyncpg, ``sqlite:///path`` on aiosqlite. SQLite
is for one registry process: its writes are serialised in-process (:attr:`Database.write_lock`); PostgreSQL
serves several replicas, which serialise per run with ``SELECT … FOR UPDATE`` and migrate under an
advisory lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from rokcommon.errors import PermanentError, TemporaryError
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)
tracer = trace.get_tracer("rok_registry.database")

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x726F6B5F7265  # pg_advisory_lock key: "rok_re"


def async_url(url: str) -> str:
    """The SQLAlchemy URL with an async driver: ``postgresql://`` → asyncpg, ``sqlite://`` → aiosqlite."""
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise PermanentError(f"ROK_DATABASE_URL {url!r} is not a database URL: {error}") from None
    driver = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}
    backend = parsed.get_backend_name()
    if backend not in driver:
        raise PermanentError(f"ROK_DATABASE_URL {url!r}: only postgresql:// and sqlite:/// are supported")
    return parsed.set(drivername=driver[backend]).render_as_string(hide_password=False)


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        options: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            path = make_url(self.url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            options["connect_args"] = {"timeout": 30}
        else:
            options.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time: serialising writes here avoids "database is locked".
        self.write_lock = asyncio.Lock() if self.is_sqlite else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def writing(self, *, traced: bool = True) -> AsyncIterator[AsyncSession]:
        """A session in a transaction that commits on leaving; database outages are temporary errors.

        ``traced``: in a span of its own (a batch of messages traces its commit in each message's trace instead).
        """
        async with self.write_lock or nullcontext(), _outages_are_temporary():
            with (
                tracer.start_as_current_span(
                    "registry db commit", kind=SpanKind.CLIENT, attributes={"db.system": self.dialect}
                )
                if traced
                else nullcontext()
            ):
                async with self.sessions() as session, session.begin():
                    yield session

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for queries; database outages are temporary errors."""
        async with _outages_are_temporary(), self.sessions() as session:
            yield session

    async def migrate(self) -> None:
        """Bring the schema to the latest revision (idempotent; one replica at a time on PostgreSQL)."""
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            await conn.run_sync(_upgrade)

    async def revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())

    async def ping(self) -> None:
        """One ``SELECT 1`` (health checks): a database that does not answer is a TemporaryError saying why."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (DBAPIError, OSError) as error:
            reason = str(getattr(error, "orig", None) or error).splitlines()[0]
            raise TemporaryError(f"the registry database does not answer: {reason}") from None

    async def close(self) -> None:
        await self.engine.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    before = MigrationContext.configure(connection).get_current_revision()
    command.upgrade(alembic_config(connection), "head")
    after = MigrationContext.configure(connection).get_current_revision()
    if before != after:
        log.info("database schema migrated from %s to %s", before or "empty", after)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@asynccontextmanager
async def _outages_are_temporary() -> AsyncIterator[None]:
    try:
        yield
    except (DBAPIError, OSError) as error:
        if isinstance(error, DBAPIError) and not error.connection_invalidated and not _transient(error):
            raise
        raise TemporaryError(f"the registry database is unavailable: {error}", delay=1.0) from error


def _transient(error: DBAPIError) -> bool:
    text_ = str(error.orig).lower()
    return any(s in text_ for s in ("connection", "locked", "terminat", "timeout", "serializ", "deadlock"))
