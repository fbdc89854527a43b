from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rok_registry.database import Database
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder


@pytest.fixture
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database: SQLite by default; ``@pytest.mark.parametrize("database", ["sqlite", "postgres"],
    indirect=True)`` runs a test on both."""
    kind = getattr(request, "param", "sqlite")
    url = request.getfixturevalue("postgres_dsn") if kind == "postgres" else f"sqlite:///{tmp_path / 'registry.db'}"
    db = Database(url)
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture
def recorder(database: Database) -> Recorder:
    return Recorder(database)


@pytest.fixture
def queries(database: Database) -> Queries:
    return Queries(database)
