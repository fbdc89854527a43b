"""An index for a page of a bucket's runs of one status (the failed runs, the running ones), by start.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_files_bucket_status_started", "files", ["bucket_id", "status", "started_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_files_bucket_status_started", "files")
