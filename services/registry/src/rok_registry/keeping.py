"""Which runs and versions a forget keeps, as plain rules over plain facts (the rules of
:class:`~rokcommon.registry_contract.KeepRules`): the registry's retention applies them to what it reads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from rokcommon.durations import parse_duration
from rokcommon.registry_contract import KeepRules


@dataclass(frozen=True)
class RunFacts:
    id: int
    name: str
    time: datetime  # when it started (when it was first recorded, if its start is unknown)
    status: str
    pinned: bool = False


@dataclass(frozen=True)
class VersionFacts:
    id: str
    tags: tuple[str, ...] = ()
    pinned: bool = False


def kept_runs(runs: Iterable[RunFacts], rules: KeepRules) -> set[int]:
    """The runs of one bucket that a forget keeps whole (see :class:`~rokcommon.registry_contract.KeepRules`)."""
    newest_first = sorted(runs, key=lambda r: (r.time, r.id), reverse=True)
    keep = {r.id for r in newest_first if r.pinned or r.status == "running"}
    if rules.keep_last:
        keep |= {r.id for r in newest_first[: rules.keep_last]}
    if rules.keep_within and newest_first:
        since = parse_duration(rules.keep_within).before(newest_first[0].time)
        keep |= {r.id for r in newest_first if r.time >= since}
    return keep


def forgotten_versions(versions: Iterable[VersionFacts], rules: KeepRules) -> list[str]:
    """Of a run that is not kept whole, the versions that go: neither pinned nor tagged one of the kept tags."""
    keep_tags = set(rules.keep_tags)
    return [v.id for v in versions if not v.pinned and not keep_tags.intersection(v.tags)]
