"""The schema is versioned with Alembic: migrating is idempotent, creates exactly the tables the code maps, and
carries the rows of an older schema along, both ways."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from rok_registry.database import Database, alembic_config, async_url
from rok_registry.queries import Queries
from rok_registry.tables import Base, NamespaceRow
from rok_registry.tables import UtcDateTime as Ts
from rokcommon.errors import PermanentError
from rokcommon.urls import format_url

AT = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
# The versions and members tables as revision 0001 made them: lists joined into strings.
VERSIONS_0001 = sa.table(
    "versions",
    *(sa.column(c) for c in ("id", "file_id", "step_key", "attempt", "phase", "step_name", "status", "best_effort")),
    *(sa.column(c) for c in ("volumes", "event_tags", "tags")),
    sa.column("created_at", Ts()),
    sa.column("taken_at", Ts()),
)
MEMBERS_0001 = sa.table(
    "members",
    *(sa.column(c) for c in ("version_id", "volume", "role", "position", "status", "snapshot_id", "repository")),
    *(sa.column(c) for c in ("size", "bytes_new", "files")),
    sa.column("taken_at", Ts()),
)
# Buckets and runs as revision 0001 made them (no pins yet).
BUCKETS_0001 = sa.table(
    "buckets",
    *(sa.column(c) for c in ("id", "namespace_id", "name", "suffix", "experiment_key")),
    sa.column("created_at", Ts()),
)
FILES_0001 = sa.table(
    "files",
    *(sa.column(c) for c in ("id", "workflow_uid", "namespace_id", "bucket_id", "name", "run_id", "status")),
    sa.column("created_at", Ts()),
)
JOINED = [
    # id, phase, step, volumes, event_tags, tags
    ("vinitial", "initial", "", "workspace\ndata", "", "initial"),
    ("vtrainafter", "after", "train", "workspace", "failed", "final,failed"),
    ("vpending", "before", "eval", "", "", ""),
]


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


async def _migrate(db: Database, how: Any, revision: str) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: how(alembic_config(c), revision))


async def _lists(db: Database, kind: Any) -> list[tuple[Any, ...]]:
    versions = sa.table("versions", sa.column("id"), *(sa.column(c, kind) for c in ("volumes", "event_tags", "tags")))
    async with db.engine.connect() as conn:
        rows = await conn.execute(sa.select(versions).order_by(versions.c.id))
        return [tuple(row) for row in rows]


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_migrating_turns_joined_volumes_and_tags_of_recorded_versions_into_lists_and_back(
    database_url: str,
) -> None:
    db = Database(database_url)
    try:
        await _migrate(db, command.upgrade, "0001")
        async with db.engine.begin() as conn:
            await conn.execute(sa.insert(NamespaceRow).values(id=1, name="team-a", created_at=AT))
            await conn.execute(
                sa.insert(BUCKETS_0001).values(
                    id=1, namespace_id=1, name="exp-abcde", suffix="abcde", experiment_key="exp", created_at=AT
                )
            )
            await conn.execute(
                sa.insert(FILES_0001).values(
                    id=1,
                    workflow_uid="wf-1",
                    namespace_id=1,
                    bucket_id=1,
                    name="run-abcde-x",
                    run_id="r1",
                    status="succeeded",
                    created_at=AT,
                )
            )
            for vid, phase, step, volumes, event_tags, tags in JOINED:
                await conn.execute(
                    sa.insert(VERSIONS_0001).values(
                        id=vid,
                        file_id=1,
                        step_key=step,
                        attempt=0,
                        phase=phase,
                        step_name=step or None,
                        status="pending" if vid == "vpending" else "complete",
                        best_effort=False,
                        volumes=volumes,
                        event_tags=event_tags,
                        tags=tags,
                        created_at=AT,
                        taken_at=AT,
                    )
                )
                for position, volume in enumerate(v for v in volumes.split("\n") if v):
                    await conn.execute(
                        sa.insert(MEMBERS_0001).values(
                            version_id=vid,
                            volume=volume,
                            role="workspace" if volume == "workspace" else "data",
                            position=position,
                            status="complete",
                            snapshot_id=f"snap-{vid}-{volume}",
                            repository="s3:rok",
                            size=1,
                            bytes_new=1,
                            files=1,
                            taken_at=AT,
                        )
                    )

        await db.migrate()

        assert await _lists(db, sa.JSON()) == [
            ("vinitial", ["workspace", "data"], [], ["initial"]),
            ("vpending", [], [], []),
            ("vtrainafter", ["workspace"], ["failed"], ["final", "failed"]),
        ]
        queries = Queries(db)
        initial = await queries.get_version("team-a", format_url("team-a", "exp-abcde", "run-abcde-x", "vinitial"))
        assert (initial.volumes, initial.tags) == (("workspace", "data"), ("initial",))
        assert [m.volume for m in initial.members] == ["workspace", "data"]
        lineage = await queries.lineage("team-a", "exp-abcde", "run-abcde-x")
        assert lineage.initial is not None and lineage.initial.id == "vinitial"

        await _migrate(db, command.downgrade, "0001")

        assert await _lists(db, sa.Text()) == sorted((vid, v, e, t) for vid, _, _, v, e, t in JOINED)
    finally:
        await db.close()
