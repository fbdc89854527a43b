from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# The tests import their helpers by name (pytest's importlib mode puts no test directory on sys.path).
sys.path.insert(0, str(Path(__file__).parent))
from rok_registry.database import Database
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite by default; ``@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)`` runs a
    test on both."""
    kind = getattr(request, "param", "sqlite")
    return request.getfixturevalue("postgres_dsn") if kind == "postgres" else f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """The database of ``database_url``, migrated."""
    db = Database(database_url)
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture
def recorder(database: Database) -> Recorder:
    return Recorder(database)


@pytest.fixture
def queries(database: Database) -> Queries:
    return Queries(database)
