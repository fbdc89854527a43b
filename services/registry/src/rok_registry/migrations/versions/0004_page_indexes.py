"""Indexes in the orders lists are paged in: a bucket's runs by start, a run's versions by when they were taken.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_files_bucket_started", "files", ["bucket_id", "started_at", "id"])
    op.create_index("ix_buckets_namespace_created", "buckets", ["namespace_id", "created_at", "id"])
    op.create_index(
        "ix_versions_file_taken", "versions", ["file_id", sa.text("coalesce(taken_at, created_at)"), "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_versions_file_taken", "versions")
    op.drop_index("ix_buckets_namespace_created", "buckets")
    op.drop_index("ix_files_bucket_started", "files")
