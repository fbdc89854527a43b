"""Recording events into lineage: in order, out of order, duplicated — the same lineage, announced once."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from registry_testkit import RunScript
from rok_registry.database import Database
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rok_registry.settling import Commit
from rokcommon.errors import PermanentError
from rokcommon.events import Event, RunFinished, RunStarted, SnapshotCompleted, StepStarted
from rokcommon.notebooks import NotebookServer, NotebookVolume
from rokcommon.registry_contract import Lineage
from rokcommon.versions import VersionKey

NS = "team-a"


async def record_all(recorder: Recorder, events: list[Event]) -> list[str]:
    """Record events; the URLs of the versions each made whole, in order (repeat announcements left out)."""
    announced = []
    for event in events:
        announced += [c.event.url for c in await recorder.record(event) if c.fresh]
    return announced


async def only_lineage(queries: Queries, namespace: str = NS) -> Lineage:
    [bucket] = await queries.list_buckets(namespace)
    [run] = await queries.list_files(namespace, bucket.name)
    return await queries.lineage(namespace, bucket.name, run.name)


def canonical(lineage: Lineage) -> str:
    """The lineage with its randomly suffixed names replaced, to compare lineages recorded in two databases."""
    text = lineage.model_dump_json()
    return text.replace(lineage.file.bucket, "<bucket>").replace(lineage.file.name, "<file>")


async def lineage_in_order(tmp_path: Path) -> str:
    """The canonical lineage of the scripted run, recorded in order into a database of its own."""
    in_order = Database(f"sqlite:///{tmp_path / 'in-order.db'}")
    await in_order.migrate()
    await record_all(Recorder(in_order), RunScript().events())
    expected = canonical(await only_lineage(Queries(in_order)))
    await in_order.close()
    return expected


def summary(lineage: Lineage) -> list[tuple]:
    rows = [("initial", lineage.initial.status, lineage.initial.tags)] if lineage.initial else []
    for step in lineage.steps:
        for version in (step.before, step.after):
            assert version is not None, f"step {step.name} lacks a version"
            rows.append((f"{step.name}.{version.phase}", version.status, version.tags))
    return rows


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_run_recorded_in_order_has_its_initial_version_and_a_before_and_after_per_step(
    recorder: Recorder, queries: Queries
) -> None:
    announced = await record_all(recorder, RunScript().events())

    lineage = await only_lineage(queries)
    assert summary(lineage) == [
        ("initial", "complete", ("initial",)),
        ("prepare.before", "complete", ()),
        ("prepare.after", "complete", ()),
        ("train.before", "complete", ()),
        ("train.after", "complete", ()),
        ("evaluate.before", "complete", ()),
        ("evaluate.after", "complete", ("final",)),
    ]
    assert [s.outcome for s in lineage.steps] == ["succeeded"] * 3
    assert lineage.file.status == "succeeded"
    assert lineage.file.run_name == "Nightly training"
    assert lineage.file.pipeline_name == "training-pipeline"
    every_version = [lineage.initial] + [v for s in lineage.steps for v in (s.before, s.after)]
    assert announced == [v.url for v in every_version]  # each announced once, when it became whole
    train_after = lineage.steps[1].after
    assert [m.volume for m in train_after.members] == ["workspace", "data"]
    assert train_after.members[0].snapshot_id == "snap-wf-1-train-after-workspace"
    assert (train_after.size, train_after.bytes_new) == (3000, 300)
    assert train_after.members[1].url == f"{train_after.url}&volume=data"


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_events_in_reverse_order_end_in_the_same_lineage_as_in_order(
    database: Database, recorder: Recorder, queries: Queries, tmp_path: Path
) -> None:
    expected = await lineage_in_order(tmp_path)

    events = list(reversed(RunScript().events()))
    assert isinstance(events[-1], RunStarted)
    announced = await record_all(recorder, events)

    lineage = await only_lineage(queries)
    assert canonical(lineage) == expected
    # nothing was announced before RunStarted named the run; then every version at once
    assert sorted(announced) == sorted(
        [lineage.initial.url] + [v.url for s in lineage.steps for v in (s.before, s.after)]
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_shuffled_and_duplicated_events_end_in_the_same_lineage_announced_once(
    recorder: Recorder, queries: Queries, tmp_path: Path, seed: int
) -> None:
    expected = await lineage_in_order(tmp_path)

    events = RunScript().events()
    rng = random.Random(seed)
    events += rng.sample(events, 8)  # redeliveries
    rng.shuffle(events)
    announced = await record_all(recorder, events)

    assert canonical(await only_lineage(queries)) == expected
    assert len(announced) == len(set(announced)) == 7


async def test_a_failed_step_gets_a_failed_after_version_and_the_run_no_final(
    recorder: Recorder, queries: Queries
) -> None:
    await record_all(recorder, RunScript(failed="train").events())

    lineage = await only_lineage(queries)
    assert summary(lineage) == [
        ("initial", "complete", ("initial",)),
        ("prepare.before", "complete", ()),
        ("prepare.after", "complete", ()),
        ("train.before", "complete", ()),
        ("train.after", "complete", ("failed",)),
    ]
    assert lineage.file.status == "failed"
    assert [s.outcome for s in lineage.steps] == ["succeeded", "failed"]


async def test_the_failed_tag_follows_the_step_outcome_even_when_the_snapshot_does_not_say_it(
    recorder: Recorder, queries: Queries
) -> None:
    events = [
        e.model_copy(update={"tags": ()}) if isinstance(e, SnapshotCompleted) else e
        for e in RunScript(failed="prepare").events()
    ]
    await record_all(recorder, events)
    lineage = await only_lineage(queries)
    assert lineage.steps[0].after.tags == ("failed",)


async def test_final_moves_to_the_last_after_version_when_run_finished_arrives_first(
    recorder: Recorder, queries: Queries
) -> None:
    events = RunScript().events()
    finished = next(e for e in events if isinstance(e, RunFinished))
    last_after = [e for e in events if isinstance(e, SnapshotCompleted) and e.phase == "after"][-2:]
    early = [e for e in events if e is not finished and e not in last_after]
    await record_all(recorder, [*early, finished])
    lineage = await only_lineage(queries)
    assert lineage.steps[1].after.tags == ("final",)  # the last after-version so far

    await record_all(recorder, last_after)
    lineage = await only_lineage(queries)
    assert lineage.steps[1].after.tags == ()
    assert lineage.steps[2].after.tags == ("final",)


async def test_a_volume_that_failed_to_snapshot_makes_the_version_partial_and_still_commits_it(
    recorder: Recorder, queries: Queries
) -> None:
    events = RunScript(snapshot_failures=(("train", "after", "data"),)).events()
    commits = []
    for event in events:
        commits += [c for c in await recorder.record(event) if c.fresh]

    lineage = await only_lineage(queries)
    after = lineage.steps[1].after
    assert after.status == "partial"
    assert [m.volume for m in after.members] == ["workspace"]
    assert [(f.volume, f.reason) for f in after.failed] == [("data", "disk read error")]
    assert after.volumes == ("workspace", "data")
    [announcement] = [c.event for c in commits if c.event.version_id == after.id]
    assert announcement.complete is False


async def test_a_version_stays_pending_until_every_volume_named_is_recorded(
    recorder: Recorder, queries: Queries
) -> None:
    events = RunScript().events()
    first_volume = [e for e in events if isinstance(e, SnapshotCompleted) and e.volume.name == "workspace"]
    announced = await record_all(recorder, [events[0], *first_volume])

    assert announced == []
    lineage = await only_lineage(queries)
    assert lineage.initial.status == "pending"
    assert [m.volume for m in lineage.initial.members] == ["workspace"]


async def test_a_redelivered_snapshot_announces_its_version_again_under_the_same_id_but_counts_it_once(
    recorder: Recorder,
) -> None:
    events = RunScript().events()[:3]  # run started, initial workspace and data
    commits = []
    for event in events:
        commits += await recorder.record(event)
    [commit] = commits
    assert commit.fresh

    # the publish after the first delivery may have been lost: the redelivery announces again, the stream
    # drops the copy by its id, and the metrics count the version once
    def seen(commits: list[Commit]) -> list[tuple[str, str, bool]]:
        return [(c.event.event_id, c.event.url, c.fresh) for c in commits]

    repeat = [(commit.event.event_id, commit.event.url, False)]
    assert seen(await recorder.record(events[-1])) == repeat
    assert seen(await recorder.record(events[1])) == repeat
    assert seen(await recorder.record(events[0])) == repeat  # RunStarted again: every whole version


async def test_runs_without_an_experiment_share_the_namespace_fallback_bucket(
    recorder: Recorder, queries: Queries
) -> None:
    await record_all(recorder, RunScript("wf-1", experiment=None).events()[:3])
    await record_all(recorder, RunScript("wf-2", experiment=None, run_name="Other").events()[:3])
    await record_all(recorder, RunScript("wf-3", experiment="Churn Model").events()[:3])

    buckets = {b.experiment: b for b in await queries.list_buckets(NS)}
    assert set(buckets) == {None, "Churn Model"}
    fallback = buckets[None]
    assert fallback.name.startswith("default-") and fallback.files == 2
    assert buckets["Churn Model"].name.startswith("churn-model-")
    suffix = fallback.name.rsplit("-", 1)[1]
    files = await queries.list_files(NS, fallback.name)
    assert sorted(f.run_name for f in files) == ["Nightly training", "Other"]
    assert all(f"-{suffix}-" in f.name for f in files)  # the bucket's suffix shows in the run's file name


async def test_a_step_retried_records_each_attempt_with_its_own_versions(recorder: Recorder, queries: Queries) -> None:
    script = RunScript(steps=("train",))
    await record_all(recorder, script.events()[:3])
    for attempt in (0, 1):
        step = script.step("train", attempt)
        started = script.tick()
        await record_all(
            recorder,
            [
                StepStarted.make(
                    step=step.model_copy(update={"step_id": f"train-{attempt}"}),
                    node="node-a",
                    volumes=script.volumes,
                    started_at=started,
                ),
                *script.snapshots(step.model_copy(update={"step_id": f"train-{attempt}"}), "before", started),
            ],
        )
    lineage = await only_lineage(queries)
    assert [(s.step_id, s.attempt, s.before.status) for s in lineage.steps] == [
        ("train-0", 0, "complete"),
        ("train-1", 1, "complete"),
    ]
    assert lineage.steps[0].before.id != lineage.steps[1].before.id


def test_version_ids_are_short_url_safe_and_the_same_for_the_same_version() -> None:
    a = VersionKey.of_step("wf-1", "node-1", 0, "before").version_id
    assert a == VersionKey.of_step("wf-1", "node-1", 0, "before").version_id
    assert len(a) == 10 and a.isalnum() and a == a.lower()
    others = {
        VersionKey.of_step("wf-1", "node-1", 0, "after").version_id,
        VersionKey.of_step("wf-1", "node-1", 1, "before").version_id,
    }
    assert a not in others and len(others) == 2


def test_versions_recorded_before_the_version_key_existed_keep_their_ids() -> None:
    assert VersionKey.of_step("wf-1", "node-1", 0, "before").version_id == "kbmuobnirv"
    assert VersionKey.initial("wf-1").version_id == "zte2nuip3o"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_replicas_recording_one_run_at_once_on_postgresql_agree_with_one_in_order(
    database: Database, queries: Queries, tmp_path: Path
) -> None:
    expected = await lineage_in_order(tmp_path)

    events = RunScript().events()
    random.Random(7).shuffle(events)
    replicas = [Recorder(database), Recorder(database)]

    async def replica(i: int) -> list[str]:
        return await record_all(replicas[i], events[i::2])

    announced = await asyncio.gather(replica(0), replica(1))

    lineage = await only_lineage(queries)
    assert canonical(lineage) == expected
    # every version recorded whole exactly once, by one replica or the other
    every = [lineage.initial.url] + [v.url for s in lineage.steps for v in (s.before, s.after)]
    assert sorted(announced[0] + announced[1]) == sorted(every)


async def test_an_event_that_moves_a_run_to_another_namespace_is_refused_as_permanent(recorder: Recorder) -> None:
    await record_all(recorder, RunScript("wf-1").events()[:1])
    elsewhere = RunScript("wf-1", namespace="team-b").events()[3]
    assert isinstance(elsewhere, StepStarted)
    with pytest.raises(
        PermanentError, match="run wf-1 is recorded in namespace 'team-a', but this event says 'team-b'"
    ):
        await recorder.record(elsewhere)


async def test_the_metrics_a_run_ends_with_are_recorded_with_it_and_shown_with_its_versions(
    recorder: Recorder, queries: Queries
) -> None:
    events = RunScript().events()
    finished = next(e for e in events if isinstance(e, RunFinished))
    with_metrics = finished.model_copy(update={"metrics": {"accuracy": 0.92, "loss": 0.25}})
    await record_all(recorder, [e if e is not finished else with_metrics for e in events])
    await record_all(recorder, [finished])  # redelivered from before metrics were known: they stay

    lineage = await only_lineage(queries)
    assert lineage.file.metrics == {"accuracy": 0.92, "loss": 0.25}
    resolved = await queries.resolve(NS, lineage.steps[0].after.url)
    assert resolved.metrics == {"accuracy": 0.92, "loss": 0.25}


async def test_the_notebook_server_a_run_came_from_is_recorded_once_and_shown_on_every_version(
    recorder: Recorder, queries: Queries
) -> None:
    server = NotebookServer(
        name="analysis",
        namespace=NS,
        image="jupyter-tensorflow:v1.9",
        resources={"requests": {"cpu": "2", "memory": "8Gi"}},
        env=({"name": "MODE", "value": "train"},),
        volumes=(
            NotebookVolume(volume="workspace", claim="workspace", mount_path="/home/jovyan", size="5Gi"),
            NotebookVolume(
                volume="data", claim="data", mount_path="/data", size="100Gi", access_modes=("ReadWriteMany",)
            ),
        ),
        server_type="jupyter",
    )
    events = RunScript().events()
    started = next(e for e in events if isinstance(e, RunStarted))
    noted = started.model_copy(update={"notebook": server})
    outcomes = await recorder.record_batch([e if e is not started else noted for e in events])
    assert not [o for o in outcomes if isinstance(o, Exception)]
    await record_all(recorder, [started])  # redelivered from a watcher that did not know it: it stays

    lineage = await only_lineage(queries)
    every = [lineage.initial, *(v for s in lineage.steps for v in (s.before, s.after))]
    assert all(v is not None and v.notebook == server for v in every)
    resolved = await queries.resolve(NS, lineage.steps[1].after.members[0].url)
    assert resolved.version.notebook == server

    await record_all(recorder, RunScript("wf-2", run_name="Other").events())  # a run without one: none shown
    [other] = [f for f in await queries.list_files(NS, lineage.file.bucket) if f.run_name == "Other"]
    assert (await queries.lineage(NS, other.bucket, other.name)).initial.notebook is None
