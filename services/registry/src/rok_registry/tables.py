"""The registry's SQL schema (SQLAlchemy 2 ORM). Migrations in ``migrations/versions`` create exactly this.

namespace ─< bucket (one per experiment) ─< file (one per run: :class:`RunRow`) ─< version (one per snapshot of a
step's volumes) ─< member (one per volume, workspace first); file ─< step (one per attempt of a workflow node).
Lists (a version's volumes and tags) are JSON arrays. A bucket, a run and a version may be ``pinned``: no forget
removes them. forget (one per forget that removed something) ─< forgotten (one per volume snapshot it removed).

Every row has a natural key with a unique constraint, so that recording an event is an upsert: redelivered,
duplicated and reordered events end in the same rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in UTC on every database (SQLite keeps no time zone: it is put back on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value} would be ambiguous: give it a time zone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class NamespaceRow(Base):
    __tablename__ = "namespaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class BucketRow(Base):
    __tablename__ = "buckets"
    __table_args__ = (
        UniqueConstraint("namespace_id", "experiment_key", name="uq_buckets_experiment"),
        UniqueConstraint("namespace_id", "name", name="uq_buckets_name"),
        Index("ix_buckets_namespace_created", "namespace_id", "created_at", "id"),  # a page of buckets
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"))
    name: Mapped[str] = mapped_column(String(253))
    suffix: Mapped[str] = mapped_column(String(16))
    experiment_key: Mapped[str] = mapped_column(String(512))  # the experiment, or "" for the fallback bucket
    experiment: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    namespace: Mapped[NamespaceRow] = relationship(lazy="joined")


class RunRow(Base):
    """A run; its table is ``files``, as a run is a file in the registry's URLs.

    ``bucket_id`` and ``name`` stay empty until its ``RunStarted`` is recorded (it may come late).
    """

    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("bucket_id", "name", name="uq_files_name"),
        Index("ix_files_bucket_started", "bucket_id", "started_at", "id"),  # a page of a bucket's runs
        Index("ix_files_bucket_status_started", "bucket_id", "status", "started_at", "id"),  # ... of one status
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_uid: Mapped[str] = mapped_column(String(253), unique=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"))
    bucket_id: Mapped[int | None] = mapped_column(ForeignKey("buckets.id"))
    name: Mapped[str | None] = mapped_column(String(253))
    run_id: Mapped[str] = mapped_column(String(253))
    run_name: Mapped[str | None] = mapped_column(String(512))
    pipeline_name: Mapped[str | None] = mapped_column(String(512))
    pipeline_version: Mapped[str | None] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # what the run's steps reported when it ended (a notebook's pipeline-metrics): name → number
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, server_default="{}")
    # the notebook server the run came from (rokcommon.notebooks.NotebookServer as JSON), when it was found
    notebook: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    namespace: Mapped[NamespaceRow] = relationship(lazy="joined")
    bucket: Mapped[BucketRow | None] = relationship(lazy="joined")


class StepRow(Base):
    """One attempt of one workflow node."""

    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("file_id", "step_id", "attempt", name="uq_steps_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id"), index=True)
    step_id: Mapped[str] = mapped_column(String(253))  # the workflow node id
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str | None] = mapped_column(String(253))
    node: Mapped[str | None] = mapped_column(String(253))
    guarded: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    outcome: Mapped[str | None] = mapped_column(String(16))


class VersionRow(Base):
    """A snapshot of a step's volumes. ``step_key`` is the node id, or "" for the run's initial version."""

    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("file_id", "step_key", "attempt", "phase", name="uq_versions_key"),
        # a page of a run's versions, in the order they were taken (created, until one of their volumes is)
        Index("ix_versions_file_taken", "file_id", text("coalesce(taken_at, created_at)"), "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id"), index=True)
    step_key: Mapped[str] = mapped_column(String(253))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    phase: Mapped[str] = mapped_column(String(16))
    step_name: Mapped[str | None] = mapped_column(String(253))
    volumes: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")  # every volume, workspace first
    event_tags: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")  # the snapshotter's, sorted
    tags: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")  # what the registry decided
    status: Mapped[str] = mapped_column(String(16), default="pending")
    best_effort: Mapped[bool] = mapped_column(Boolean, default=False)
    taken_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    committed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())  # recorded whole and named: announced
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    run: Mapped[RunRow] = relationship(lazy="joined")
    members: Mapped[list[MemberRow]] = relationship(lazy="selectin", order_by="MemberRow.position")


class MemberRow(Base):
    """One volume of a version: stored (``snapshot_id``) or failed (``reason``)."""

    __tablename__ = "members"
    __table_args__ = (
        UniqueConstraint("version_id", "volume", name="uq_members_volume"),
        Index("ix_members_snapshot", "snapshot_id"),  # is a snapshot still recorded (the store's gc asks)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"), index=True)
    volume: Mapped[str] = mapped_column(String(253))
    role: Mapped[str] = mapped_column(String(16), default="data")
    position: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))  # complete | failed
    snapshot_id: Mapped[str | None] = mapped_column(String(253))
    repository: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_new: Mapped[int] = mapped_column(BigInteger, default=0)
    files: Mapped[int] = mapped_column(BigInteger, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(253))
    taken_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # SnapshotChanges, as the snapshotter sent it


class ForgetRow(Base):
    """One forget that removed something: when, by whom (a user, or ``policy``), by which rules, in what."""

    __tablename__ = "forgets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(253))
    bucket: Mapped[str | None] = mapped_column(String(253))  # None: every bucket of the namespace
    rules: Mapped[str] = mapped_column(Text)
    forgotten_by: Mapped[str] = mapped_column(String(253))
    forgotten_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)  # runs that lost versions
    versions: Mapped[int] = mapped_column(Integer, default=0)


class ForgottenRow(Base):
    """One volume snapshot of a forgotten version: what the store's gc may remove once nothing records it."""

    __tablename__ = "forgotten"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    forget_id: Mapped[int] = mapped_column(ForeignKey("forgets.id"), index=True)
    url: Mapped[str] = mapped_column(Text)  # the version's
    volume: Mapped[str] = mapped_column(String(253))
    snapshot_id: Mapped[str] = mapped_column(String(253), index=True)
    repository: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
