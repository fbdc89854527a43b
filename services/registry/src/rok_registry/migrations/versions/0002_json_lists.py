"""A version's volumes and tags as JSON lists, not "\\n"- and ","-joined strings.

Every row is converted, both ways. The columns are replaced (added under a temporary name, filled, the old one
dropped, the new one renamed) rather than altered in place, so that SQLite needs no table rebuild: a rebuild of
``versions`` would drop a table that ``members`` refers to.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# column → the separator it was joined with before this revision, and its type then
JOINED = {"volumes": "\n", "event_tags": ",", "tags": ","}
TEXT: Mapping[str, sa.types.TypeEngine[Any]] = {"volumes": sa.Text(), "event_tags": sa.String(64), "tags": sa.String(64)}
JSON: Mapping[str, sa.types.TypeEngine[Any]] = {name: sa.JSON() for name in JOINED}
BATCH = 1000


def upgrade() -> None:
    _replace(TEXT, JSON, "[]", lambda name, value: [part for part in (value or "").split(JOINED[name]) if part])


def downgrade() -> None:
    _replace(JSON, TEXT, "", lambda name, value: JOINED[name].join(value or []))


def _replace(
    old: Mapping[str, sa.types.TypeEngine[Any]],
    new: Mapping[str, sa.types.TypeEngine[Any]],
    default: str,
    convert: Callable[[str, Any], Any],
) -> None:
    """Replace each column of ``JOINED`` in ``versions`` (of type ``old``) by one of type ``new``, every row's
    value converted by ``convert(name, value)``."""
    for name in JOINED:
        op.add_column("versions", sa.Column(f"{name}_new", new[name], nullable=False, server_default=default))
    versions = sa.table(
        "versions",
        sa.column("id", sa.String()),
        *(sa.column(name, old[name]) for name in JOINED),
        *(sa.column(f"{name}_new", new[name]) for name in JOINED),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(versions.c.id, *(versions.c[name] for name in JOINED))).all()
    fill = (
        versions.update()
        .where(versions.c.id == sa.bindparam("row_id"))
        .values({f"{name}_new": sa.bindparam(f"value_{name}") for name in JOINED})
    )
    for start in range(0, len(rows), BATCH):
        bind.execute(
            fill,
            [
                {"row_id": row.id, **{f"value_{name}": convert(name, getattr(row, name)) for name in JOINED}}
                for row in rows[start : start + BATCH]
            ],
        )
    for name in JOINED:
        op.drop_column("versions", name)
        op.alter_column("versions", f"{name}_new", new_column_name=name)
