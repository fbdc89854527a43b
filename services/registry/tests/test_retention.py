"""Retention in the registry: which runs and versions a forget keeps (the last runs, those within a duration of
the newest, pinned, running, and the versions tagged final or failed), that a dry run changes nothing, that a
forget is recorded with the snapshots it forgot, and that another namespace's runs can be neither forgotten nor
pinned — on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from registry_testkit import T0, RunScript
from rok_registry.database import Database
from rok_registry.keeping import RunFacts, kept_runs
from rok_registry.policy import Policy
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rok_registry.retention import Retention
from rok_registry.settings import RegistrySettings
from rok_registry.tables import ForgetRow, ForgottenRow
from rokcommon.durations import parse_duration
from rokcommon.errors import Forbidden, InvalidRequest, NotFound
from rokcommon.events import RunStarted
from rokcommon.registry_contract import Forget, KeepRules
from rokcommon.urls import format_url
from sqlalchemy import select

BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


class DatedRun(RunScript):
    """A run that starts ``days`` after T0 (its steps follow it)."""

    def __init__(self, uid: str, days: int, **kwargs: object) -> None:
        super().__init__(uid, **kwargs)  # type: ignore[arg-type]
        self.clock = T0 + timedelta(days=days)

    def started(self) -> RunStarted:
        event = super().started()
        return event.model_copy(update={"started_at": self.clock})


async def record(recorder: Recorder, *runs: RunScript, finish: bool = True) -> None:
    """Each run's events in one transaction (as the registry batches what arrives together)."""
    for run in runs:
        events = [e for e in run.events() if finish or type(e).__name__ != "RunFinished"]
        for outcome in await recorder.record_batch(events):
            assert not isinstance(outcome, Exception), outcome


async def versions_of(queries: Queries, bucket: str) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """Each run's versions as (step or "initial" and phase, tags)."""
    out = {}
    for run in await queries.list_files("team-a", bucket):
        versions = await queries.list_versions("team-a", bucket, run.name)
        out[run.run_id] = sorted((f"{v.step_name or 'initial'}-{v.phase}", v.tags) for v in versions)
    return out


def test_durations_are_written_as_restic_writes_them_and_count_calendar_months() -> None:
    assert str(parse_duration("1y2m")) == "1y2m"
    assert parse_duration("30d").before(datetime(2026, 12, 31, tzinfo=UTC)) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_duration("1m").before(datetime(2026, 3, 31, 8, tzinfo=UTC)) == datetime(2026, 2, 28, 8, tzinfo=UTC)
    assert parse_duration("2w12h").before(datetime(2026, 1, 15, 12, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)
    for wrong in ("", "30", "d", "30 days", "1h1h", "5x", "-3d"):
        with pytest.raises(InvalidRequest, match="duration"):
            parse_duration(wrong)


def test_keep_within_counts_back_from_the_newest_run_and_running_or_pinned_runs_always_stay() -> None:
    runs = [
        RunFacts(1, "old", T0, "succeeded"),
        RunFacts(2, "pinned", T0 + timedelta(days=1), "succeeded", pinned=True),
        RunFacts(3, "running", T0 + timedelta(days=2), "running"),
        RunFacts(4, "recent", T0 + timedelta(days=9), "failed"),
        RunFacts(5, "newest", T0 + timedelta(days=10), "succeeded"),
    ]
    assert kept_runs(runs, KeepRules(keep_within="1d")) == {2, 3, 4, 5}
    assert kept_runs(runs, KeepRules(keep_last=1)) == {2, 3, 5}
    assert kept_runs(runs, KeepRules(keep_last=3, keep_within="1y")) == {1, 2, 3, 4, 5}


@BOTH
async def test_a_forget_keeps_the_last_runs_the_tagged_and_pinned_versions_and_a_dry_run_changes_nothing(
    database: Database, recorder: Recorder, queries: Queries
) -> None:
    retention = Retention(database)
    r1, r2, r3, r4 = (
        DatedRun("wf-1", 0, steps=("prepare", "train")),
        DatedRun("wf-2", 1, steps=("prepare", "train"), failed="train"),
        DatedRun("wf-3", 2, steps=("prepare", "train")),
        DatedRun("wf-4", 3, steps=("prepare", "train")),
    )
    still_running = DatedRun("wf-5", -5, steps=("prepare",))
    await record(recorder, r1, r2, r3, r4)
    await record(recorder, still_running, finish=False)
    (bucket,) = [b.name for b in await queries.list_buckets("team-a")]
    files = {f.run_id: f for f in await queries.list_files("team-a", bucket)}
    r1_prepare_after = next(
        v
        for v in await queries.list_versions("team-a", bucket, files["run-wf-1"].name)
        if v.step_name == "prepare" and v.phase == "after"
    )
    assert (await retention.pin("team-a", r1_prepare_after.url)).kind == "version"
    assert (await retention.pin("team-a", files["run-wf-3"].url)).kind == "file"
    assert (await queries.get_version("team-a", r1_prepare_after.url)).pinned
    assert [f.run_id for f in await queries.list_files("team-a", bucket) if f.pinned] == ["run-wf-3"]
    before = await versions_of(queries, bucket)

    rules = KeepRules(keep_last=1)
    dry = await retention.forget(Forget(namespace="team-a", bucket=bucket, rules=rules, dry_run=True), by="alice")
    assert await versions_of(queries, bucket) == before

    done = await retention.forget(Forget(namespace="team-a", bucket=bucket, rules=rules), by="alice")
    assert (dry.versions_forgotten, dry.runs_forgotten, dry.snapshots_forgotten) == (7, 2, 12)
    assert (done.versions_forgotten, done.runs_forgotten, done.snapshots_forgotten) == (7, 2, 12)
    assert done.bytes_forgotten == 7 * (1000 + 2000)
    assert {r.url: (r.versions_forgotten, r.versions_kept) for r in done.runs} == {
        files["run-wf-1"].url: (3, 2),
        files["run-wf-2"].url: (4, 1),
    }
    after = await versions_of(queries, bucket)
    assert after["run-wf-1"] == [("prepare-after", ()), ("train-after", ("final",))]  # pinned, and final
    assert after["run-wf-2"] == [("train-after", ("failed",))]
    for kept in ("run-wf-3", "run-wf-4", "run-wf-5"):
        assert after[kept] == before[kept]

    # what the store's gc learns: forgotten, still recorded, never recorded; the initial snapshots are shared
    # by every run's initial version here (one notebook snapshot), so the kept runs still record them
    forgotten_id, kept_id, shared = (
        "snap-wf-1-prepare-before-data",
        "snap-wf-1-train-after-data",
        "snap-initial-initial-data",
    )
    known = await retention.snapshots([forgotten_id, kept_id, shared, "never-recorded"])
    assert (known.recorded, known.forgotten) == (tuple(sorted((kept_id, shared))), (forgotten_id,))

    async with database.reading() as s:
        forgets = (await s.execute(select(ForgetRow))).scalars().all()
        forgotten = (await s.execute(select(ForgottenRow))).scalars().all()
    assert [(f.forgotten_by, f.rules, f.bucket, f.versions) for f in forgets] == [
        ("alice", "keep-last 1, keep-tag final,failed", bucket, 7)
    ]
    assert len(forgotten) == 14 and forgotten_id in {f.snapshot_id for f in forgotten}

    # a second forget by the same rules finds nothing more; without tags, a run with a pinned version keeps it
    again = await retention.forget(Forget(namespace="team-a", bucket=bucket, rules=rules), by="alice")
    assert again.versions_forgotten == 0
    no_tags = KeepRules(keep_within="2d", keep_tags=())
    await retention.forget(Forget(namespace="team-a", rules=no_tags), by="bob")
    after = await versions_of(queries, bucket)
    assert after["run-wf-1"] == [("prepare-after", ())]
    assert after["run-wf-2"] == [("train-after", ("failed",))]  # within 2 days of the newest run

    # unpinned, the run goes whole: its lineage is gone, its steps with it
    await retention.pin("team-a", r1_prepare_after.url, pinned=False)
    gone = await retention.forget(Forget(namespace="team-a", rules=no_tags), by="bob")
    assert (gone.runs_removed, gone.versions_forgotten) == (1, 1)
    with pytest.raises(NotFound):
        await queries.lineage("team-a", bucket, files["run-wf-1"].name)


@BOTH
async def test_another_namespaces_runs_can_be_neither_forgotten_nor_pinned(
    database: Database, recorder: Recorder, queries: Queries
) -> None:
    retention = Retention(database)
    await record(recorder, DatedRun("wf-a", 0, steps=("prepare",)), DatedRun("wf-b", 1, steps=("prepare",)))
    await record(recorder, DatedRun("wf-c", 0, namespace="team-b", steps=("prepare",)))
    (bucket,) = [b.name for b in await queries.list_buckets("team-a")]
    run = (await queries.list_files("team-a", bucket))[0]
    with pytest.raises(NotFound, match="team-b"):
        await retention.forget(Forget(namespace="team-b", bucket=bucket, rules=KeepRules(keep_last=1)))
    with pytest.raises(Forbidden, match="belongs to namespace 'team-a'"):
        await retention.pin("team-b", run.url)
    with pytest.raises(NotFound):
        await retention.pin("team-a", format_url("team-a", bucket, "no-such-run"))
    # team-b's own forget of every bucket leaves team-a's runs alone
    await retention.forget(Forget(namespace="team-b", rules=KeepRules(keep_last=1, keep_tags=())))
    assert len(await queries.list_files("team-a", bucket)) == 2
    with pytest.raises(InvalidRequest, match="keep-last"):
        await retention.forget(Forget(namespace="team-a", rules=KeepRules()))


async def test_the_policy_in_settings_forgets_in_every_namespace_as_the_policy(
    database: Database, recorder: Recorder, queries: Queries, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROK_RETENTION_KEEP_LAST", "1")
    monkeypatch.setenv("ROK_RETENTION_KEEP_TAGS", "")
    rules = RegistrySettings().retention
    assert rules == KeepRules(keep_last=1, keep_tags=())
    monkeypatch.delenv("ROK_RETENTION_KEEP_LAST")
    assert RegistrySettings().retention is None  # no keep rule: no policy
    monkeypatch.setenv("ROK_RETENTION_KEEP_WITHIN", "3 weeks")
    with pytest.raises(ValueError, match="duration"):
        RegistrySettings()

    for namespace in ("team-a", "team-b"):
        await record(
            recorder, *(DatedRun(f"{namespace}-{i}", i, namespace=namespace, steps=("prepare",)) for i in range(3))
        )
    reports = await Policy(Retention(database), rules, interval=3600).apply()
    assert [(r.namespace, r.runs_removed, r.by) for r in reports] == [("team-a", 2, "policy"), ("team-b", 2, "policy")]
    for namespace in ("team-a", "team-b"):
        (bucket,) = [b.name for b in await queries.list_buckets(namespace)]
        assert [f.run_id for f in await queries.list_files(namespace, bucket)] == [f"run-{namespace}-2"]
