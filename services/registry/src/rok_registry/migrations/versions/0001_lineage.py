"""Lineage: namespaces, buckets, files (runs), steps, versions and their members.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def ts(name, **kw):
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def upgrade() -> None:
    op.create_table(
        "namespaces",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(253), nullable=False, unique=True),
        ts("created_at", nullable=False),
    )
    op.create_table(
        "buckets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("namespace_id", sa.Integer, sa.ForeignKey("namespaces.id"), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("suffix", sa.String(16), nullable=False),
        sa.Column("experiment_key", sa.String(512), nullable=False),
        sa.Column("experiment", sa.String(512)),
        ts("created_at", nullable=False),
        sa.UniqueConstraint("namespace_id", "experiment_key", name="uq_buckets_experiment"),
        sa.UniqueConstraint("namespace_id", "name", name="uq_buckets_name"),
    )
    op.create_table(
        "files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("workflow_uid", sa.String(253), nullable=False, unique=True),
        sa.Column("namespace_id", sa.Integer, sa.ForeignKey("namespaces.id"), nullable=False),
        sa.Column("bucket_id", sa.Integer, sa.ForeignKey("buckets.id")),
        sa.Column("name", sa.String(253)),
        sa.Column("run_id", sa.String(253), nullable=False),
        sa.Column("run_name", sa.String(512)),
        sa.Column("pipeline_name", sa.String(512)),
        sa.Column("pipeline_version", sa.String(512)),
        sa.Column("status", sa.String(16), nullable=False),
        ts("started_at"),
        ts("finished_at"),
        ts("created_at", nullable=False),
        sa.UniqueConstraint("bucket_id", "name", name="uq_files_name"),
    )
    op.create_table(
        "steps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("file_id", sa.Integer, sa.ForeignKey("files.id"), nullable=False, index=True),
        sa.Column("step_id", sa.String(253), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("name", sa.String(253)),
        sa.Column("node", sa.String(253)),
        sa.Column("guarded", sa.Boolean, nullable=False),
        ts("started_at"),
        ts("finished_at"),
        sa.Column("outcome", sa.String(16)),
        sa.UniqueConstraint("file_id", "step_id", "attempt", name="uq_steps_key"),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("file_id", sa.Integer, sa.ForeignKey("files.id"), nullable=False, index=True),
        sa.Column("step_key", sa.String(253), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("step_name", sa.String(253)),
        sa.Column("volumes", sa.Text, nullable=False),
        sa.Column("event_tags", sa.String(64), nullable=False),
        sa.Column("tags", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("best_effort", sa.Boolean, nullable=False),
        ts("taken_at"),
        ts("created_at", nullable=False),
        ts("committed_at"),
        sa.UniqueConstraint("file_id", "step_key", "attempt", "phase", name="uq_versions_key"),
    )
    op.create_table(
        "members",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.String(32), sa.ForeignKey("versions.id"), nullable=False, index=True),
        sa.Column("volume", sa.String(253), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("snapshot_id", sa.String(253)),
        sa.Column("repository", sa.Text),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("bytes_new", sa.BigInteger, nullable=False),
        sa.Column("files", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("node", sa.String(253)),
        ts("taken_at"),
        sa.UniqueConstraint("version_id", "volume", name="uq_members_volume"),
    )


def downgrade() -> None:
    for table in ("members", "versions", "steps", "files", "buckets", "namespaces"):
        op.drop_table(table)
