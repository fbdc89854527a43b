"""Retention: buckets, runs and versions may be pinned; forgets and the snapshots they forgot are recorded; a
member is found by its snapshot id (what the store's gc asks).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PINNED = ("buckets", "files", "versions")


def upgrade() -> None:
    for table in PINNED:  # ADD and DROP COLUMN in place on SQLite too (3.35+): a table rebuilt would break its keys
        op.add_column(table, sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_members_snapshot", "members", ["snapshot_id"])
    op.create_table(
        "forgets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("bucket", sa.String(253), nullable=True),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("forgotten_by", sa.String(253), nullable=False),
        sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("versions", sa.Integer(), nullable=False),
    )
    op.create_index("ix_forgets_forgotten_at", "forgets", ["forgotten_at"])
    op.create_table(
        "forgotten",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("forget_id", sa.Integer(), sa.ForeignKey("forgets.id"), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("volume", sa.String(253), nullable=False),
        sa.Column("snapshot_id", sa.String(253), nullable=False),
        sa.Column("repository", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_forgotten_forget_id", "forgotten", ["forget_id"])
    op.create_index("ix_forgotten_snapshot_id", "forgotten", ["snapshot_id"])


def downgrade() -> None:
    op.drop_index("ix_forgotten_snapshot_id", "forgotten")
    op.drop_index("ix_forgotten_forget_id", "forgotten")
    op.drop_table("forgotten")
    op.drop_index("ix_forgets_forgotten_at", "forgets")
    op.drop_table("forgets")
    op.drop_index("ix_members_snapshot", "members")
    for table in reversed(PINNED):
        op.drop_column(table, "pinned")
