"""A namespace's id is remembered only once the transaction that inserted it has committed.

Several workers record at once; one that inserted a namespace's row must not let the others use its id before
it commits (on PostgreSQL their rows would point at a row they cannot see yet), nor keep the id of a row its
rolled-back transaction never stored.
"""

from __future__ import annotations

import asyncio

import pytest
from registry_testkit import RunScript
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rokcommon.errors import PermanentError

NAMESPACES = 12
RUNS_PER_NAMESPACE = 4


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_the_first_events_of_many_new_namespaces_recorded_at_once_all_succeed(
    recorder: Recorder, queries: Queries
) -> None:
    runs = [
        RunScript(f"wf-{n}-{r}", namespace=f"team-{n}", steps=("train",))
        for n in range(NAMESPACES)
        for r in range(RUNS_PER_NAMESPACE)
    ]
    # every run's first events at once, as eight workers would take them off the stream
    first_events = [event for run in runs for event in run.events()[:3]]
    workers = asyncio.Semaphore(8)

    async def record(event: object) -> None:
        async with workers:
            await recorder.record(event)  # type: ignore[arg-type]

    results = await asyncio.gather(*(record(e) for e in first_events), return_exceptions=True)

    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    for n in range(NAMESPACES):
        [bucket] = await queries.list_buckets(f"team-{n}")
        assert bucket.files == RUNS_PER_NAMESPACE


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_namespace_inserted_by_a_transaction_that_rolled_back_is_not_remembered(
    recorder: Recorder, queries: Queries
) -> None:
    await recorder.record(RunScript("wf-1", namespace="team-a").started())
    # an event that inserts namespace team-b, then is refused: its transaction rolls back
    moved = RunScript("wf-1", namespace="team-b").events()[3]
    with pytest.raises(PermanentError):
        await recorder.record(moved)

    await recorder.record(RunScript("wf-2", namespace="team-b").started())

    [bucket] = await queries.list_buckets("team-b")
    assert bucket.files == 1
