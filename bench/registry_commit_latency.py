"""The registry's share of the commit latency: from the snapshot event that makes a version whole to its
``VersionCommitted`` on the bus.

Run: ``uv run python bench/registry_commit_latency.py [--versions 300] [--in-flight 20] [--database-url DSN]``.
Starts a nats-server and the registry (its own process, or this one with ``--in-process``; SQLite in a
temporary directory unless ``--database-url`` names an empty PostgreSQL database), then for each version publishes its
step event and the snapshot events of two volumes, and times from the publish of the last snapshot event to the
arrival of the announcement. First one version at a time, then ``--in-flight`` runs at once. Prints p50, p99, max,
and the registry process's CPU time per version (its step event, two snapshot events and the announcement).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import nats
import psutil
from rok_registry.main import build
from rok_registry.settings import RegistrySettings
from rokcommon import bus, streams, subjects
from rokcommon.events import (
    RunRef,
    RunStarted,
    SnapshotCompleted,
    SnapshotStatsModel,
    StepRef,
    StepStarted,
    VersionCommitted,
    VolumeRef,
)
from roktesting.nats import NatsServer, running
from roktesting.ports import free_port, wait_for_port

VOLUMES = (
    VolumeRef(name="workspace", role="workspace", path="/vol/workspace"),
    VolumeRef(name="data", path="/vol/data"),
)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one_run(js, waiters: dict[str, asyncio.Future[float]], run: RunRef, steps: int) -> list[float]:
    now = datetime.now(UTC)
    await bus.publish(
        js,
        RunStarted.make(run=run, run_name=run.run_id, pipeline_name="bench", node="n", volumes=VOLUMES, started_at=now),
    )
    latencies = []
    for i in range(steps):
        step = StepRef(run=run, step_id=f"{run.workflow_uid}-s{i}", name=f"s{i}")
        await bus.publish(js, StepStarted.make(step=step, node="n", volumes=VOLUMES, started_at=datetime.now(UTC)))
        key = f"{run.workflow_uid}/{step.step_id}"
        waiters[key] = asyncio.get_running_loop().create_future()
        for volume in VOLUMES:
            sent = time.perf_counter()
            await bus.publish(
                js,
                SnapshotCompleted.make(
                    run=run,
                    step=step,
                    phase="before",
                    volume=volume,
                    volumes=tuple(v.name for v in VOLUMES),
                    repository="file:///repo",
                    snapshot_id=f"snap-{key}-{volume.name}",
                    stats=SnapshotStatsModel(files=1000, bytes_scanned=100 << 20),
                    node="n",
                    taken_at=datetime.now(UTC),
                ),
            )
        arrived = await asyncio.wait_for(waiters[key], 30)
        del waiters[key]
        latencies.append(arrived - sent)
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=300, help="versions per measurement")
    parser.add_argument("--in-flight", type=int, default=20, help="runs at once in the second measurement")
    parser.add_argument(
        "--database-url", default="", help="an empty PostgreSQL database (default: SQLite in a temp dir)"
    )
    parser.add_argument("--in-process", action="store_true", help="run the registry in this process")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start()
        settings = RegistrySettings(
            nats_url=server.url,
            state_dir=Path(tmp) / "state",
            database_url=args.database_url,
            registry_port=free_port(),
            log_level="WARNING",
        )
        registry = build(settings, graceful_timeout=2.0) if args.in_process else None
        child = None
        if registry is not None:
            await registry.start_storage()
        else:
            env = {
                **os.environ,
                "ROK_NATS_URL": server.url,
                "ROK_STATE_DIR": str(settings.state_dir),
                "ROK_DATABASE_URL": args.database_url,
                "ROK_REGISTRY_PORT": str(settings.registry_port),
                "ROK_LOG_LEVEL": "WARNING",
            }
            child = await asyncio.create_subprocess_exec(sys.executable, "-m", "rok_registry", env=env)
            await asyncio.to_thread(wait_for_port, settings.registry_port, what="registry")
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await streams.ensure_streams(js)
        waiters: dict[str, asyncio.Future[float]] = {}

        async def on_committed(msg) -> None:
            event = VersionCommitted.decode(msg.data)
            key = f"{event.run.workflow_uid}/{event.step.step_id if event.step else '-'}"
            future = waiters.get(key)
            if future is not None and not future.done():
                future.set_result(time.perf_counter())

        await nc.subscribe(subjects.VERSION_COMMITTED, cb=on_committed)
        try:
            async with running(registry.service) if registry else contextlib.nullcontext():
                await asyncio.sleep(1.0)  # the consumers bind
                db = "PostgreSQL" if args.database_url else "SQLite"
                print(f"registry commit latency ({db}, two volumes per version, {args.versions} versions each)")
                cpu = RegistryCpu(child.pid if child else os.getpid())
                sequential = await one_run(
                    js, waiters, RunRef(namespace="bench", run_id="r0", workflow_uid="w0"), args.versions
                )
                report("one run, one version at a time", sequential, cpu.per(len(sequential)))
                per_run = max(1, args.versions // args.in_flight)
                results = await asyncio.gather(
                    *(
                        one_run(js, waiters, RunRef(namespace="bench", run_id=f"r{i}", workflow_uid=f"w{i}"), per_run)
                        for i in range(1, args.in_flight + 1)
                    )
                )
                flat = [x for r in results for x in r]
                report(f"{args.in_flight} runs in flight", flat, cpu.per(len(flat)))
        finally:
            await nc.close()
            if registry is not None:
                await registry.stop_storage()
            if child is not None:
                child.send_signal(signal.SIGTERM)
                await asyncio.wait_for(child.wait(), 30)
            server.stop()


class RegistryCpu:
    """CPU seconds the registry's process used since the last call, per version (what bounds throughput)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.last = self._total()

    def _total(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def per(self, versions: int) -> float:
        now = self._total()
        used, self.last = now - self.last, now
        return used / max(1, versions)


def report(label: str, latencies: list[float], cpu_per_version: float) -> None:
    ms = [x * 1000 for x in latencies]
    print(
        f"  {label:<30} n={len(ms):<4} p50={quantile(ms, 0.5):7.1f} ms  p99={quantile(ms, 0.99):7.1f} ms  "
        f"max={max(ms):7.1f} ms  registry CPU {cpu_per_version * 1000:5.1f} ms/version",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
