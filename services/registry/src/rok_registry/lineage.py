"""The rules of lineage, as plain functions: when a version is whole, and which tags it carries.

They read only what has been recorded, never the order it arrived in, so every delivery order of the same
events ends in the same lineage.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

TAG_ORDER = ("initial", "final", "failed")
FAILED_OUTCOMES = ("failed", "error")


@dataclass(frozen=True)
class VersionFacts:
    """What the tag rules look at for one version."""

    id: str
    phase: str
    taken_at: datetime | None
    event_tags: frozenset[str]
    step_outcome: str | None  # the outcome of the step attempt it belongs to, when known


def version_status(volumes: Sequence[str], recorded: dict[str, str]) -> str:
    """``pending`` until every volume is recorded; then ``complete``, or ``partial`` if a volume failed.

    ``recorded`` maps volume name → ``complete`` | ``failed``.
    """
    if not volumes or any(v not in recorded for v in volumes):
        return "pending"
    return "partial" if any(recorded[v] == "failed" for v in volumes) else "complete"


def final_version(run_status: str, versions: Iterable[VersionFacts]) -> str | None:
    """The version tagged ``final``: the last after-version of a run that succeeded (None otherwise)."""
    if run_status != "succeeded":
        return None
    after = [v for v in versions if v.phase == "after" and v.taken_at is not None]
    if not after:
        return None
    return max(after, key=lambda v: (v.taken_at, v.id)).id


def tags_for(version: VersionFacts, *, final: str | None) -> tuple[str, ...]:
    """``initial`` on the initial version, ``failed`` on the after-version of a failed step, ``final`` on one."""
    tags = {t for t in version.event_tags if t != "final"}
    if version.phase == "initial":
        tags.add("initial")
    if version.phase == "after" and version.step_outcome in FAILED_OUTCOMES:
        tags.add("failed")
    if version.id == final:
        tags.add("final")
    return tuple(t for t in TAG_ORDER if t in tags)


def merge_volumes(known: Sequence[str], more: Sequence[str]) -> list[str]:
    """The volumes of a version as events name them: the first list, then any name only a later one adds."""
    merged = list(known)
    merged += [v for v in more if v not in merged]
    return merged
