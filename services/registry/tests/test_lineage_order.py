"""A run's lineage lists its steps in the order they began, whatever told when: its start, else its
before-snapshot, else its end; a tie on the start is broken by the before-snapshot; a step with no time yet comes
last. Paging forward and back gives that same order, a page at a time."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from registry_testkit import T0, RunScript
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rokcommon.events import Event, StepFinished, StepStarted
from rokcommon.registry_contract import GetLineage, Lineage

NS = "team-a"


def script() -> list[Event]:
    run = RunScript()
    vols = run.volumes

    def at(seconds: int) -> datetime:
        return T0 + timedelta(seconds=seconds)

    a, b, c, d, e = (run.step(name) for name in ("a", "b", "c", "d", "e"))
    return [
        run.started(),
        *run.snapshots(None, "initial", T0),
        # a and b start in the same (whole) second; b's before-snapshot was taken first
        StepStarted.make(step=a, node="node-a", volumes=vols, started_at=at(100)),
        *run.snapshots(a, "before", at(100)),
        StepStarted.make(step=b, node="node-a", volumes=vols, started_at=at(100)),
        *run.snapshots(b, "before", at(95)),
        *run.snapshots(c, "before", at(50)),  # c's start was never heard of: its before-snapshot places it
        StepFinished.make(step=d, node="node-a", volumes=vols, outcome="succeeded", finished_at=at(200)),  # its end
        *run.snapshots(e, "after", at(300)),  # e has no time of its own yet: last
        *run.snapshots(a, "after", at(110)),
    ]


async def pages(queries: Queries, bucket: str, file: str, *, backwards_from: str | None = None) -> list[Lineage]:
    """Every page of two steps, from the first on, or from ``backwards_from`` back to the first."""
    got = []
    cursor = backwards_from
    while True:
        page = await queries.lineage_page(GetLineage(namespace=NS, bucket=bucket, file=file, limit=2, cursor=cursor))
        got.append(page)
        cursor = page.prev if backwards_from else page.next
        if cursor is None:
            return got


def names(page: Lineage) -> list[str]:
    return [step.name or "" for step in page.steps]


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_lineage_pages_keep_the_order_the_steps_began_in_both_directions(
    recorder: Recorder, queries: Queries
) -> None:
    await recorder.record_batch(script())
    [bucket] = await queries.list_buckets(NS)
    [run] = await queries.list_files(NS, bucket.name)

    forward = await pages(queries, bucket.name, run.name)
    assert [names(p) for p in forward] == [["c", "b"], ["a", "d"], ["e"]]
    assert all(p.initial is not None and p.initial.phase == "initial" for p in forward)
    [a] = [s for s in forward[1].steps if s.name == "a"]
    assert a.before is not None and a.after is not None  # a page's steps come with their versions

    back = await pages(queries, bucket.name, run.name, backwards_from=forward[-1].prev)
    assert [names(p) for p in back] == [["a", "d"], ["c", "b"]]
    assert back[-1].prev is None and back[0].next is not None
    whole = await queries.lineage(NS, bucket.name, run.name)
    assert names(whole) == ["c", "b", "a", "d", "e"]
