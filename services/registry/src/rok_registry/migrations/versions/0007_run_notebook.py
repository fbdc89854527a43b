"""The notebook server a run came from (its image, resources, env and volumes), recorded when it starts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("files", sa.Column("notebook", sa.JSON(), nullable=True))


def downgrade() -> None:
    # a plain DROP COLUMN (SQLite 3.35 has one): a batch rebuild of files would drop a table others refer to
    op.drop_column("files", "notebook")
