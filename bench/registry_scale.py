"""The registry at scale: one run of 2,000 versions and 10,000 runs in one bucket, on SQLite and on PostgreSQL.

Run: ``uv run python bench/registry_scale.py [--runs 10000] [--steps 1000] [--samples 100] [--only sqlite] [--quick]``.
For each database it starts a nats-server and the registry in its own process (SQLite in a temporary directory;
PostgreSQL on the local server, else a throwaway cluster), then records through the real bus:

1. ``--rounds`` runs (3), one after another, each of 1,000 steps with a before- and an after-version of two
   volumes (2,001 versions, 6,002 events, published with many in flight): versions recorded per second from the
   first publish to the last announcement, and the registry process's CPU time per version, per round and their
   median and spread;
2. 10,000 runs in one bucket (their ``RunStarted`` and ``RunFinished``): runs recorded per second.

Then it times each list call, sequentially, ``--samples`` times, over NATS (the registry client) and over HTTP
(the JSON API): the first page of the bucket's runs, a page 5,000 runs deep, the first page of the big run's
versions, a page 1,000 versions deep, and the first page of its lineage; and the web pages (the bucket page, the
run page, the lineage page), whose time on loopback bounds their server time from above. It prints p50 and p99.
Targets: every list call p99 ≤ 100 ms on PostgreSQL, pages ≤ 300 ms, recording ≥ 500 versions/s. The figures are
pessimistic on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nats
import psutil
from nats.js import JetStreamContext
from rokcommon import bus, streams, subjects
from rokcommon.credentials import web_token
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
    VersionCommitted,
    VolumeRef,
)
from rokcommon.registry_client import RegistryClient
from roktesting.nats import NatsServer
from roktesting.ports import free_port, wait_for_port
from roktesting.postgres import fresh_database, postgres_server_at

NS = "bench"
VOLUMES = (
    VolumeRef(name="workspace", role="workspace", path="/vol/workspace"),
    VolumeRef(name="data", path="/vol/data"),
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
IN_FLIGHT = 256  # publishes awaited at once


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sweep(steps: int, round_: int = 0) -> list[Event]:
    """The events of one run of ``steps`` steps, each with a before- and an after-snapshot of two volumes."""
    name = "sweep" if round_ == 0 else f"sweep-{round_}"
    run = RunRef(namespace=NS, run_id=name, workflow_uid=f"wf-{name}")
    names = tuple(v.name for v in VOLUMES)
    events: list[Event] = [
        RunStarted.make(
            run=run,
            run_name="a sweep",
            pipeline_name="sweep",
            experiment="sweep",
            node="n",
            volumes=VOLUMES,
            started_at=T0,
        )
    ]

    def snapshots(step: StepRef | None, phase: str, at: datetime) -> list[Event]:
        return [
            SnapshotCompleted.make(
                run=run,
                step=step,
                phase=phase,
                volume=volume,
                volumes=names,
                repository="file:///repo",
                snapshot_id=f"snap-{name}-{step.step_id if step else 'initial'}-{phase}-{volume.name}",
                stats=SnapshotStatsModel(files=1000, bytes_scanned=100 << 20, bytes_new=1 << 20),
                node="n",
                taken_at=at,
            )
            for volume in VOLUMES
        ]

    events += snapshots(None, "initial", T0)
    for i in range(steps):
        step = StepRef(run=run, step_id=f"wf-{name}-s{i}", name=f"trial-{i:04d}")
        began, ended = T0 + timedelta(seconds=10 * i + 1), T0 + timedelta(seconds=10 * i + 5)
        events.append(StepStarted.make(step=step, node="n", volumes=VOLUMES, started_at=began))
        events += snapshots(step, "before", began)
        events.append(StepFinished.make(step=step, node="n", volumes=VOLUMES, outcome="succeeded", finished_at=ended))
        events += snapshots(step, "after", ended)
    return events


def many_runs(count: int) -> list[Event]:
    """``RunStarted`` and ``RunFinished`` of ``count`` runs of one experiment (every seventh failed)."""
    events: list[Event] = []
    for i in range(count):
        run = RunRef(namespace=NS, run_id=f"hourly-{i:05d}", workflow_uid=f"wf-hourly-{i:05d}")
        started = T0 + timedelta(hours=i)
        events.append(
            RunStarted.make(
                run=run,
                run_name=f"hourly training {i:05d}",
                pipeline_name="hourly-training",
                experiment="hourly",
                node="n",
                volumes=VOLUMES,
                started_at=started,
            )
        )
        outcome = "failed" if i % 7 == 0 else "succeeded"
        events.append(RunFinished.make(run=run, outcome=outcome, finished_at=started + timedelta(minutes=20)))
    return events


async def publish_all(js: JetStreamContext, events: list[Event]) -> None:
    for start in range(0, len(events), IN_FLIGHT):
        await asyncio.gather(*(bus.publish(js, e) for e in events[start : start + IN_FLIGHT]))


class Cpu:
    """CPU seconds a process used since the last call."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.last = self._total()

    def _total(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def since(self) -> float:
        now = self._total()
        used, self.last = now - self.last, now
        return used


async def until(probe: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{probe} not true after {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def timed(label: str, call: Callable[[], Awaitable[Any]], samples: int) -> None:
    await call()  # warm
    took = []
    for _ in range(samples):
        start = time.perf_counter()
        await call()
        took.append((time.perf_counter() - start) * 1000)
    print(f"    {label:<44} p50 {quantile(took, 0.5):7.1f} ms   p99 {quantile(took, 0.99):7.1f} ms", flush=True)


def http_get(url: str, token: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body: bytes = response.read()
        assert response.status == 200, (url, response.status)
        return body


@contextmanager
def registry_process(env: dict[str, str]) -> Iterator[int]:
    import subprocess

    child = subprocess.Popen([sys.executable, "-m", "rok_registry"], env={**os.environ, **env})
    try:
        wait_for_port(int(env["ROK_REGISTRY_PORT"]), timeout=60, what="registry")
        yield child.pid
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


async def measure(database: str, url: str, tmp: Path, args: argparse.Namespace) -> None:
    server = NatsServer(tmp / "nats")
    server.start()
    port = free_port()
    env = {
        "ROK_NATS_URL": server.url,
        "ROK_STATE_DIR": str(tmp / "state"),
        "ROK_DATABASE_URL": url,
        "ROK_REGISTRY_PORT": str(port),
        "ROK_NAMESPACE": NS,
        "ROK_LOG_LEVEL": "WARNING",
    }
    try:
        with registry_process(env) as pid:
            nc = await nats.connect(server.url)
            try:
                token = web_token(tmp / "state")  # the local user's, made by the registry as it started
                await run_bench(database, nc, f"http://127.0.0.1:{port}", token, Cpu(pid), args)
            finally:
                await nc.close()
    finally:
        server.stop()


async def run_bench(database: str, nc: Any, web: str, token: str, cpu: Cpu, args: argparse.Namespace) -> None:
    js = nc.jetstream()
    await streams.ensure_streams(js)
    client = RegistryClient(nc, NS, timeout=30)
    print(f"{database}:", flush=True)

    versions = 1 + 2 * args.steps
    committed: set[str] = set()

    async def on_committed(msg: Any) -> None:
        committed.add(VersionCommitted.decode(msg.data).version_id)

    await nc.subscribe(subjects.VERSION_COMMITTED, cb=on_committed)
    await asyncio.sleep(1.0)  # the registry's consumers bind
    rates, costs = [], []
    for round_ in range(args.rounds):  # a new run each round, in the same bucket
        events = sweep(args.steps, round_)
        committed.clear()
        cpu.since()
        start = time.perf_counter()
        await publish_all(js, events)

        async def all_committed() -> bool:
            return len(committed) >= versions

        await until(all_committed, 600)
        took = time.perf_counter() - start
        used = cpu.since()
        rates.append(versions / took)
        costs.append(used / versions * 1000)
        print(
            f"  round {round_ + 1}: one run of {versions} versions ({len(events)} events): "
            f"{versions / took:6.0f} versions/s; registry CPU {used / versions * 1000:.2f} ms/version "
            f"(load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    print(
        f"  recording, median of {args.rounds}: {statistics.median(rates):6.0f} versions/s "
        f"(spread {min(rates):.0f}–{max(rates):.0f}); registry CPU {statistics.median(costs):.2f} ms/version "
        f"(spread {min(costs):.2f}–{max(costs):.2f}; one core's worth: {1000 / statistics.median(costs):6.0f} "
        "versions/s)",
        flush=True,
    )

    runs = many_runs(args.runs)
    start = time.perf_counter()
    await publish_all(js, runs)
    hourly = ""

    async def all_finished() -> bool:
        nonlocal hourly
        buckets = {b.experiment: b.name for b in await client.list_buckets()}
        hourly = buckets.get("hourly", "")
        if not hourly:
            return False
        page = await client.files_page(hourly, limit=1)
        running = await client.files_page(hourly, limit=1, status="running")
        return page.total >= args.runs and running.total == 0

    await until(all_finished, 900)
    took = time.perf_counter() - start
    used = cpu.since()
    print(
        f"  {args.runs} runs in one bucket ({len(runs)} events): {args.runs / took:6.0f} runs/s, "
        f"{len(runs) / took:6.0f} events/s; registry CPU {used / len(runs) * 1000:.1f} ms/event",
        flush=True,
    )

    [sweep_run] = [f async for f in client.iter_files(await _bucket(client, "sweep")) if f.run_id == "sweep"]
    sweep_bucket = sweep_run.bucket
    deep_runs = await _cursor_after(lambda c: client.files_page(hourly, cursor=c), args.runs // 2 // 50)
    deep_versions = await _cursor_after(
        lambda c: client.versions_page(sweep_bucket, sweep_run.name, cursor=c), versions // 2 // 50
    )
    n = args.samples
    print(f"  over NATS ({n} samples each):", flush=True)
    await timed("bucket's runs, first page", lambda: client.files_page(hourly), n)
    await timed(f"bucket's runs, {args.runs // 2} deep", lambda: client.files_page(hourly, cursor=deep_runs), n)
    await timed("failed runs, first page", lambda: client.files_page(hourly, status="failed"), n)
    await timed("run's versions, first page", lambda: client.versions_page(sweep_bucket, sweep_run.name), n)
    await timed(
        f"run's versions, {versions // 2} deep",
        lambda: client.versions_page(sweep_bucket, sweep_run.name, cursor=deep_versions),
        n,
    )
    await timed("run's lineage, first page", lambda: client.lineage_page(sweep_bucket, sweep_run.name), n)

    api = f"{web}/api/v1/namespaces/{NS}"
    files, vers = f"{api}/buckets/{hourly}/files", f"{api}/buckets/{sweep_bucket}/files/{sweep_run.name}/versions"
    print(f"  over HTTP ({n} samples each):", flush=True)
    for label, target in [
        ("bucket's runs, first page", files),
        (f"bucket's runs, {args.runs // 2} deep", f"{files}?cursor={quote(deep_runs)}"),
        ("run's versions, first page", vers),
        (f"run's versions, {versions // 2} deep", f"{vers}?cursor={quote(deep_versions)}"),
        ("run's lineage, first page", f"{api}/buckets/{sweep_bucket}/files/{sweep_run.name}/lineage"),
        (f"web: bucket page ({args.runs} runs)", f"{web}/buckets/{hourly}"),
        (f"web: run page ({versions} versions)", f"{web}/buckets/{sweep_bucket}/{sweep_run.name}"),
        ("web: lineage page", f"{web}/buckets/{sweep_bucket}/{sweep_run.name}/lineage"),
    ]:
        await timed(label, lambda target=target: asyncio.to_thread(http_get, target, token), n)  # type: ignore[misc]


async def _bucket(client: RegistryClient, experiment: str) -> str:
    return next(b.name for b in await client.list_buckets() if b.experiment == experiment)


async def _cursor_after(page: Callable[[str | None], Awaitable[Any]], pages: int) -> str:
    """The cursor of the page ``pages`` pages into a list."""
    cursor = None
    for _ in range(max(1, pages)):
        cursor = (await page(cursor)).next
        assert cursor is not None
    return cursor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the one bucket")
    parser.add_argument("--steps", type=int, default=1000, help="steps of the big run (two versions each)")
    parser.add_argument("--samples", type=int, default=100, help="times each list call is timed")
    parser.add_argument("--rounds", type=int, default=3, help="runs of the big run's size recorded, one by one")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="one database only")
    parser.add_argument("--quick", action="store_true", help="2,000 runs, 300 steps, 20 samples (about a minute)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.steps, args.samples = min(args.runs, 2000), min(args.steps, 300), min(args.samples, 20)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"registry at scale (pessimistic on a shared machine: {os.cpu_count()} cores, load average {load})", flush=True
    )
    with tempfile.TemporaryDirectory() as root:
        tmp = Path(root)
        if args.only != "postgres":
            (tmp / "sqlite").mkdir()
            asyncio.run(measure("SQLite", f"sqlite:///{tmp / 'sqlite' / 'registry.db'}", tmp / "sqlite", args))
        if args.only != "sqlite":
            (tmp / "pg").mkdir()
            with postgres_server_at(tmp / "pg") as server, fresh_database(server) as dsn:
                (tmp / "postgres").mkdir()
                asyncio.run(measure("PostgreSQL", dsn, tmp / "postgres", args))


if __name__ == "__main__":
    main()
