"""A run's metrics: the numbers its steps reported when it ended (a notebook's pipeline-metrics), name → value.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("files", sa.Column("metrics", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    # a plain DROP COLUMN (SQLite 3.35 has one): a batch rebuild of files would drop a table others refer to
    op.drop_column("files", "metrics")
