"""Forgetting at scale: one bucket of N runs (one step each, two volumes: three versions, six snapshots a run), on
SQLite and on PostgreSQL.

Run: ``uv run python bench/retention_scale.py [--runs 2000] [--keep 100] [--ids 20000] [--only sqlite]``.
The runs are recorded straight into the database (the registry's recorder, events batched as the registry
batches them); then it times, once each: a dry run of ``--keep-last KEEP`` (every other run is looked at), the
forget itself (one transaction removing the versions of N − KEEP runs and recording their snapshots), and, as
``rok repo gc --registry`` asks, which of ``--ids`` snapshot ids are recorded or forgotten, in batches of 4,096
(half of them known to the registry): the time per batch, p50 and max. The figures are pessimistic on a machine
shared with other work.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rok_registry.database import Database
from rok_registry.recorder import Recorder
from rok_registry.retention import Retention
from rokcommon.events import (
    Event,
    RunFinished,
    RunRef,
    RunStarted,
    SnapshotCompleted,
    SnapshotStatsModel,
    StepFinished,
    StepRef,
    StepStarted,
    VolumeRef,
)
from rokcommon.registry_contract import SNAPSHOTS_ASKED, Forget, KeepRules
from roktesting.postgres import fresh_database, postgres_server_at

NS = "bench"
VOLUMES = (
    VolumeRef(name="workspace", role="workspace", path="/vol/workspace"),
    VolumeRef(name="data", path="/vol/data"),
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 64  # events in one transaction, as the registry's default


def run_events(i: int) -> list[Event]:
    run = RunRef(namespace=NS, run_id=f"hourly-{i:05d}", workflow_uid=f"wf-{i:05d}")
    started = T0 + timedelta(hours=i)
    step = StepRef(run=run, step_id=f"wf-{i:05d}-train", name="train")
    names = tuple(v.name for v in VOLUMES)

    def snapshots(s: StepRef | None, phase: str, at: datetime) -> list[Event]:
        return [
            SnapshotCompleted.make(
                run=run,
                step=s,
                phase=phase,
                volume=volume,
                volumes=names,
                repository="file:///repo",
                snapshot_id=snapshot_id(i, phase, volume.name),
                stats=SnapshotStatsModel(files=100, bytes_scanned=10 << 20, bytes_new=1 << 20),
                node="n",
                taken_at=at,
            )
            for volume in VOLUMES
        ]

    return [
        RunStarted.make(
            run=run,
            run_name=f"hourly training {i:05d}",
            pipeline_name="hourly-training",
            experiment="hourly",
            node="n",
            volumes=VOLUMES,
            started_at=started,
        ),
        *snapshots(None, "initial", started),
        StepStarted.make(step=step, node="n", volumes=VOLUMES, started_at=started + timedelta(minutes=1)),
        *snapshots(step, "before", started + timedelta(minutes=1)),
        StepFinished.make(
            step=step, node="n", volumes=VOLUMES, outcome="succeeded", finished_at=started + timedelta(minutes=9)
        ),
        *snapshots(step, "after", started + timedelta(minutes=9)),
        RunFinished.make(run=run, outcome="succeeded", finished_at=started + timedelta(minutes=10)),
    ]


def snapshot_id(i: int, phase: str, volume: str) -> str:
    return f"{i:08d}{phase[:1]}{volume[:1]}".ljust(64, "0")


async def measure(url: str, args: argparse.Namespace) -> dict[str, str]:
    db = Database(url)
    await db.migrate()
    try:
        recorder, retention = Recorder(db), Retention(db)
        events = [e for i in range(args.runs) for e in run_events(i)]
        began = time.monotonic()
        for start in range(0, len(events), BATCH):
            await recorder.record_batch(events[start : start + BATCH])
        recorded = time.monotonic() - began
        rules = KeepRules(keep_last=args.keep)
        began = time.monotonic()
        dry = await retention.forget(Forget(namespace=NS, rules=rules, dry_run=True), by="bench")
        dry_s = time.monotonic() - began
        began = time.monotonic()
        done = await retention.forget(Forget(namespace=NS, rules=rules), by="bench")
        forget_s = time.monotonic() - began
        assert dry.versions_forgotten == done.versions_forgotten == 2 * (args.runs - args.keep)
        ids = [snapshot_id(i % args.runs, "ba"[i % 2] if i < args.ids // 2 else "x", "w") for i in range(args.ids)]
        times: list[float] = []
        for start in range(0, len(ids), SNAPSHOTS_ASKED):
            began = time.monotonic()
            await retention.snapshots(ids[start : start + SNAPSHOTS_ASKED])
            times.append(time.monotonic() - began)
        times.sort()
        return {
            "recorded (runs/s)": f"{args.runs / recorded:.0f}",
            f"forget --dry-run ({dry.versions_forgotten} versions)": f"{dry_s * 1000:.0f} ms",
            f"forget ({done.snapshots_forgotten} snapshots)": f"{forget_s * 1000:.0f} ms",
            f"snapshots asked ({SNAPSHOTS_ASKED} ids) p50": f"{times[len(times) // 2] * 1000:.0f} ms",
            f"snapshots asked ({SNAPSHOTS_ASKED} ids) max": f"{times[-1] * 1000:.0f} ms",
        }
    finally:
        await db.close()


@contextmanager
def postgres(root: Path) -> Iterator[str]:
    with postgres_server_at(root) as server, fresh_database(server) as dsn:
        yield dsn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--keep", type=int, default=100)
    parser.add_argument("--ids", type=int, default=20_000)
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "postgres":
            results["SQLite"] = asyncio.run(measure(f"sqlite:///{Path(tmp) / 'registry.db'}", args))
        if args.only != "sqlite":
            with postgres(Path(tmp) / "pg") as dsn:
                results["PostgreSQL"] = asyncio.run(measure(dsn, args))
    names = list(results)
    rows = list(next(iter(results.values())))
    width = max(len(r) for r in rows)
    print(f"{args.runs} runs in one bucket, forget --keep-last {args.keep}")
    print(f"{'':<{width}}  " + "  ".join(f"{n:>12}" for n in names))
    for row in rows:
        print(f"{row:<{width}}  " + "  ".join(f"{results[n][row]:>12}" for n in names))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
