"""The schema is versioned with Alembic: migrating is idempotent and creates exactly the tables the code maps."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from rok_registry.database import Database, alembic_config, async_url
from rok_registry.tables import Base
from rokcommon.errors import PermanentError


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_migrations_bring_an_empty_database_to_the_mapped_schema_and_are_idempotent(database: Database) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert await database.revision() == head
    await database.migrate()  # a second start, or a second replica
    assert await database.revision() == head

    async with database.engine.connect() as conn:
        differences = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    assert differences == []


def test_database_urls_get_an_async_driver_and_unknown_ones_are_refused() -> None:
    assert async_url("postgresql://rok:pw@db:5432/rok") == "postgresql+asyncpg://rok:pw@db:5432/rok"
    assert async_url("sqlite:////var/lib/rok/registry.db") == "sqlite+aiosqlite:////var/lib/rok/registry.db"
    with pytest.raises(PermanentError, match="only postgresql:// and sqlite:///"):
        async_url("mysql://db/rok")
    with pytest.raises(PermanentError, match="is not a database URL"):
        async_url("not a url")
