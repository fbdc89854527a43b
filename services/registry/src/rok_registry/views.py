"""Rows → the result models of :mod:`rokcommon.registry_contract` (URLs included, members workspace first)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from rokcommon.events import SnapshotChanges
from rokcommon.notebooks import NotebookServer
from rokcommon.registry_contract import Bucket, FailedVolume, Member, RunFile, SearchHit, Step, Version
from rokcommon.urls import format_url

from rok_registry.tables import BucketRow, MemberRow, RunRow, StepRow, VersionRow

LATER = datetime.max.replace(tzinfo=UTC)  # the place of what has no time yet: after all that has


def bucket(row: BucketRow, files: int = 0) -> Bucket:
    ns = row.namespace.name
    return Bucket(
        namespace=ns,
        name=row.name,
        url=format_url(ns, row.name),
        experiment=row.experiment,
        created_at=row.created_at,
        files=files,
        pinned=bool(row.pinned),
        suffix=row.suffix,
    )


def run_file(row: RunRow, versions: int = 0) -> RunFile:
    assert row.bucket is not None and row.name is not None
    ns = row.namespace.name
    return RunFile(
        namespace=ns,
        bucket=row.bucket.name,
        name=row.name,
        url=format_url(ns, row.bucket.name, row.name),
        pipeline_name=row.pipeline_name,
        pipeline_version=row.pipeline_version,
        run_id=row.run_id,
        run_name=row.run_name,
        workflow_uid=row.workflow_uid,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        versions=versions,
        metrics=row.metrics or {},
        pinned=bool(row.pinned),
    )


def version(row: VersionRow) -> Version:
    run = row.run
    assert run.bucket is not None and run.name is not None
    ns, bucket = run.namespace.name, run.bucket.name
    url = format_url(ns, bucket, run.name, row.id)
    stored = sorted(
        (m for m in row.members if m.status == "complete"), key=lambda m: (m.role != "workspace", m.position)
    )
    members = tuple(member(m, ns, bucket, run.name, row.id) for m in stored)
    failed = tuple(FailedVolume(volume=m.volume, reason=m.reason or "") for m in row.members if m.status == "failed")
    return Version(
        id=row.id,
        url=url,
        namespace=ns,
        bucket=bucket,
        file=run.name,
        workflow_uid=run.workflow_uid,
        run_id=run.run_id,
        step_id=row.step_key or None,
        step_name=row.step_name,
        attempt=row.attempt,
        phase=row.phase,
        tags=tuple(row.tags),
        taken_at=row.taken_at,
        status=row.status,
        best_effort=row.best_effort,
        volumes=tuple(row.volumes),
        members=members,
        failed=failed,
        size=sum(m.size for m in members),
        bytes_new=sum(m.bytes_new for m in members),
        notebook=NotebookServer.model_validate(run.notebook) if run.notebook else None,
        pinned=bool(row.pinned),
    )


def member(row: MemberRow, ns: str, bucket: str, file: str, version: str) -> Member:
    assert row.snapshot_id is not None
    return Member(
        volume=row.volume,
        role=row.role,
        snapshot_id=row.snapshot_id,
        repository=row.repository or "",
        size=row.size,
        bytes_new=row.bytes_new,
        files=row.files,
        url=format_url(ns, bucket, file, version, row.volume),
        changes=SnapshotChanges.model_validate(row.changes) if row.changes is not None else None,
    )


def bucket_hit(row: BucketRow) -> SearchHit:
    b = bucket(row)
    return SearchHit(kind="bucket", url=b.url, title=row.experiment or row.name, bucket=row.name)


def file_hit(row: RunRow) -> SearchHit:
    f = run_file(row)
    return SearchHit(kind="file", url=f.url, title=row.run_name or row.run_id, bucket=f.bucket, file=f.name)


def version_hit(row: VersionRow) -> SearchHit:
    v = version(row)
    step = f"{v.step_name or v.step_id} ({v.phase})" if v.step_id else v.phase
    return SearchHit(kind="version", url=v.url, title=f"{v.file}: {step}", bucket=v.bucket, file=v.file, version=v.id)


def step(row: StepRow, versions: Mapping[tuple[str, int, str], Version]) -> Step:
    """A step attempt with its before- and after-version, from versions by (step key, attempt, phase)."""
    return Step(
        step_id=row.step_id,
        name=row.name,
        attempt=row.attempt,
        node=row.node,
        guarded=row.guarded,
        started_at=row.started_at,
        finished_at=row.finished_at,
        outcome=row.outcome,
        before=versions.get((row.step_id, row.attempt, "before")),
        after=versions.get((row.step_id, row.attempt, "after")),
    )
