"""Settling: after an event is recorded, the status and tags of the versions it can change, recomputed from what is
recorded, and the announcements of the versions that are whole.

An event is settled in a *scope*: a snapshot event's one version, a step event's versions (those of its step
attempt), or every version of the run (the run's own events). Once the run has succeeded any scope widens to the
whole run, since its ``final`` tag may move. The events of one run recorded in one transaction are settled once,
in the union of their scopes (:class:`Due`). The rules themselves are :mod:`rok_registry.lineage`'s.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rokcommon.events import RunRef, StepRef, VersionCommitted
from rokcommon.urls import format_url
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from rok_registry import lineage
from rok_registry.rows import NO_RUN, now
from rok_registry.tables import BucketRow, MemberRow, RunRow, StepRow, VersionRow

_MEMBERS_OF = select(MemberRow.version_id, MemberRow.volume, MemberRow.status, MemberRow.taken_at).where(
    MemberRow.version_id.in_(bindparam("ids", expanding=True))
)

StepKey = tuple[str, int]  # a step attempt: its node id and attempt ("" for the initial version)


@dataclass(frozen=True)
class Commit:
    """A version that became whole: the event announcing it, and when its step event happened."""

    event: VersionCommitted
    since: datetime
    fresh: bool  # first recorded whole by this event (a repeat announcement is not)


@dataclass(frozen=True)
class OneVersion:
    """The scope of a snapshot event: its version, and the row of its step attempt (None for the initial one)."""

    version: VersionRow
    step: StepRow | None


@dataclass
class Due:
    """What the events of one run recorded in a transaction can change: settled once, at the end of the batch."""

    run: RunRow
    whole: bool = False  # every version of the run (its own events)
    versions: dict[str, OneVersion] = field(default_factory=dict)
    steps: set[StepKey] = field(default_factory=set)
    announce_whole: bool = False
    again: set[str] = field(default_factory=set)

    def add(
        self, scope: OneVersion | StepKey | None, *, announce_whole: bool = False, again: str | None = None
    ) -> None:
        if scope is None:
            self.whole = True
        elif isinstance(scope, OneVersion):
            self.versions[scope.version.id] = scope
        else:
            self.steps.add(scope)
        self.announce_whole = self.announce_whole or announce_whole
        if again is not None:
            self.again.add(again)


async def settle(
    session: AsyncSession,
    run: RunRow,
    scope: OneVersion | StepKey | None = None,
    *,
    announce_whole: bool = False,
    again: str | None = None,
) -> list[Commit]:
    """Recompute the status and tags of the versions in ``scope`` (None: the whole run); return those to announce.

    Announced are the versions that are whole and were not announced before, every whole one if
    ``announce_whole``, and the version ``again`` if it is whole; none before the run's ``RunStarted`` names it.
    """
    due = Due(run)
    due.add(scope, announce_whole=announce_whole, again=again)
    return await settle_due(session, due)


async def settle_dues(session: AsyncSession, dues: Sequence[Due]) -> list[list[Commit]]:
    """Settle what each :class:`Due` gathered, as :func:`settle_due` does, finding the rows of the runs settled as
    a whole in two statements for all of them; the versions to announce, for each due."""
    whole = [due.run.id for due in dues if _whole(due)]
    versions: dict[int, list[VersionRow]] = defaultdict(list)
    steps: dict[int, dict[StepKey, StepRow]] = defaultdict(dict)
    if whole:
        found = select(VersionRow).where(VersionRow.file_id.in_(whole)).options(*NO_RUN)
        for version in (await session.execute(found)).scalars():
            versions[version.file_id].append(version)
        for step in (await session.execute(select(StepRow).where(StepRow.file_id.in_(whole)))).scalars():
            steps[step.file_id][(step.step_id, step.attempt)] = step
    return [
        await settle_due(session, due, (versions[due.run.id], steps[due.run.id]) if _whole(due) else None)
        for due in dues
    ]


def _whole(due: Due) -> bool:
    return due.whole or due.run.status == "succeeded"


async def settle_due(
    session: AsyncSession, due: Due, rows: tuple[list[VersionRow], dict[StepKey, StepRow]] | None = None
) -> list[Commit]:
    """Settle what :class:`Due` gathered (as :func:`settle` does one scope); return the versions to announce.

    ``rows``: the run's versions and steps, if it is settled as a whole and they were found already.
    """
    run = due.run
    versions, steps = rows or await _in_scope(session, run, None if _whole(due) else due)
    members: dict[str, list[Any]] = defaultdict(list)
    if versions:
        for member in await session.execute(_MEMBERS_OF, {"ids": [v.id for v in versions]}):
            members[member.version_id].append(member)
    facts = []
    for version in versions:
        recorded = members[version.id]
        version.status = lineage.version_status(version.volumes, {m.volume: m.status for m in recorded})
        times = [m.taken_at for m in recorded if m.taken_at is not None]
        version.taken_at = max(times) if times else None
        step = steps.get((version.step_key, version.attempt))
        facts.append(
            lineage.VersionFacts(
                id=version.id,
                phase=version.phase,
                taken_at=version.taken_at,
                event_tags=frozenset(version.event_tags),
                step_outcome=step.outcome if step else None,
            )
        )
    final = lineage.final_version(run.status, facts)
    for version, fact in zip(versions, facts, strict=True):
        version.tags = list(lineage.tags_for(fact, final=final))
    due_now = [
        v
        for v in versions
        if v.status != "pending" and (v.committed_at is None or due.announce_whole or v.id in due.again)
    ]
    if not due_now or run.bucket_id is None or run.name is None:
        return []  # not announced before the run's RunStarted names it
    bucket = await session.get(BucketRow, run.bucket_id)
    assert bucket is not None
    return [_commit(run, bucket, v, steps.get((v.step_key, v.attempt))) for v in due_now]


async def _in_scope(
    session: AsyncSession, run: RunRow, due: Due | None
) -> tuple[list[VersionRow], dict[StepKey, StepRow]]:
    """The versions of the scope (None: the whole run), and the rows of their step attempts by key."""
    versions: dict[str, VersionRow] = {}
    steps: dict[StepKey, StepRow] = {}
    if due is not None:
        for one in due.versions.values():
            versions[one.version.id] = one.version
            if one.step is not None:
                steps[(one.step.step_id, one.step.attempt)] = one.step
        if not due.steps:
            return list(versions.values()), steps
    versions_query = select(VersionRow).where(VersionRow.file_id == run.id).options(*NO_RUN)
    steps_query = select(StepRow).where(StepRow.file_id == run.id)
    if due is not None:  # the versions of some step attempts: those of their nodes, then only their attempts
        nodes = sorted({key for key, _ in due.steps})
        versions_query = versions_query.where(VersionRow.step_key.in_(nodes))
        steps_query = steps_query.where(StepRow.step_id.in_(nodes))
    for version in (await session.execute(versions_query)).scalars():
        if due is None or (version.step_key, version.attempt) in due.steps:
            versions.setdefault(version.id, version)
    for step in (await session.execute(steps_query)).scalars():
        if due is None or (step.step_id, step.attempt) in due.steps or (step.step_id, step.attempt) in steps:
            steps[(step.step_id, step.attempt)] = step
    return list(versions.values()), steps


def _commit(run: RunRow, bucket: BucketRow, version: VersionRow, step: StepRow | None) -> Commit:
    """The announcement of a whole version; the first one notes when the version was committed."""
    fresh = version.committed_at is None
    if fresh:
        version.committed_at = now()
    ref = RunRef(namespace=run.namespace.name, run_id=run.run_id, workflow_uid=run.workflow_uid)
    step_ref = None
    if version.step_key:
        name = version.step_name or (step.name if step else None) or version.step_key
        step_ref = StepRef(run=ref, step_id=version.step_key, name=name, attempt=version.attempt)
    assert run.name is not None
    event = VersionCommitted.make(
        run=ref,
        step=step_ref,
        phase=version.phase,
        url=format_url(run.namespace.name, bucket.name, run.name, version.id),
        tags=tuple(version.tags),
        complete=version.status == "complete",
    )
    since = {
        "initial": run.started_at,
        "before": step.started_at if step else None,
        "after": step.finished_at if step else None,
    }.get(version.phase)
    return Commit(event=event, since=since or version.created_at, fresh=fresh)
