"""Event-to-version latency: from the publish of a step event to the registry announcing its version.

What is measured: the time from ``bus.publish(StepStarted | StepFinished)`` until this process receives the
registry's ``VersionCommitted`` for that step and phase — through the real snapshotter (store engine, node-local
cache) and the real registry, each its own process, on a real nats-server. The volume (~100 MB by default) does
not change after the run's initial snapshot, so each snapshot is the incremental case users meet most: every
file is unchanged, nothing is read, nothing new is stored, yet a new snapshot record and a new version are
written.

Two loads:

- one run, one event at a time (``--events`` events: a step's before and after, step after step);
- ``--runs`` runs in flight at once, each publishing its next event as soon as its previous version is
  committed (the same number of events in total).

Defaults are the one-machine mode (``file://`` repository, SQLite registry); ``--s3`` and ``--postgres`` point
them at an S3 endpoint (the standard AWS_* variables) and a PostgreSQL DSN instead::

    uv run python bench/latency.py                       # ~100 MB volume, 300 events, then 20 runs in flight
    uv run python bench/latency.py --events 100 --size-mb 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from rokcommon import bus, streams, subjects
from rokcommon.events import RunRef, RunStarted, StepFinished, StepRef, StepStarted, VersionCommitted, VolumeRef

NODE = "bench-node"
NAMESPACE = "bench"


# --- the processes ---------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv, env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and text in self.log.read_text(errors="replace"):
                return
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise SystemExit(f"{self.name} exited: see {self.log}")
            time.sleep(0.05)
        raise SystemExit(f"{self.name} not ready within {timeout:.0f}s: see {self.log}")

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start_system(root: Path, args: argparse.Namespace) -> tuple[str, list[Process]]:
    nats_server = shutil.which("nats-server")
    if nats_server is None:
        raise SystemExit("nats-server is not installed: make setup")
    port = free_port()
    nats_url = f"nats://127.0.0.1:{port}"
    env = {
        "ROK_NATS_URL": nats_url,
        "ROK_NODE_NAME": NODE,
        "ROK_VOLUME_ROOTS": str(root),
        "ROK_LOG_FORMAT": "json",
        "ROK_LOG_LEVEL": "WARNING",
        "ROK_REPOSITORY": args.s3 or (root / "repo").as_uri(),
        "ROK_REGISTRY_PORT": str(free_port()),
        "ROK_SNAPSHOT_CONCURRENCY": str(args.snapshot_concurrency),
    }
    if args.postgres:
        env["ROK_DATABASE_URL"] = args.postgres
    if args.spans:
        env["ROK_OTEL_FILE"] = str(root / "spans.jsonl")
    processes = [
        Process(
            "nats-server",
            [nats_server, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(root / "nats")],
            {},
            root / "nats.log",
        ),
        Process(
            "registry",
            [sys.executable, "-m", "rok_registry"],
            {**env, "ROK_STATE_DIR": str(root / "registry"), "ROK_LOG_LEVEL": "INFO"},
            root / "registry.log",
        ),
        Process(
            "snapshotter",
            [sys.executable, "-m", "rok_snapshotter"],
            {**env, "ROK_STATE_DIR": str(root / "snapshotter"), "ROK_LOG_LEVEL": "INFO"},
            root / "snapshotter.log",
        ),
    ]
    processes[0].start()
    time.sleep(0.3)
    for p in processes[1:]:
        p.start()
    for p in processes[1:]:
        p.wait_ready(f'"{p.name} ready"')
    return nats_url, processes


# --- the load --------------------------------------------------------------------------------------------


def make_volume(path: Path, size_mb: int) -> None:
    """~size_mb of incompressible data in files of 1-8 MiB and a few hundred small ones."""
    path.mkdir(parents=True)
    written, i = 0, 0
    while written < size_mb * 1024 * 1024:
        size = (1 + i % 8) * 1024 * 1024
        (path / f"blob-{i:03d}.bin").write_bytes(os.urandom(size))
        written += size
        i += 1
    (path / "src").mkdir()
    for j in range(300):
        (path / "src" / f"module_{j}.py").write_text(f"VALUE = {j}\n" * 20)


@dataclass
class Waiter:
    """Receives VersionCommitted on core NATS and wakes whoever waits for that (run, step, phase)."""

    waiting: dict[tuple[str, str | None, str], asyncio.Future[float]] = field(default_factory=dict)

    async def on_commit(self, msg: Msg) -> None:
        received = time.perf_counter()
        event = VersionCommitted.decode(msg.data)
        key = (event.run.workflow_uid, event.step.step_id if event.step else None, event.phase)
        future = self.waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(received)

    def expect(self, key: tuple[str, str | None, str]) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[key] = future
        return future


class Run:
    def __init__(self, volume: Path) -> None:
        self.ref = RunRef(namespace=NAMESPACE, run_id=f"run-{uuid.uuid4().hex[:8]}", workflow_uid=str(uuid.uuid4()))
        self.volumes = (VolumeRef(name="workspace", role="workspace", path=str(volume)),)
        self.steps = 0

    def started(self) -> RunStarted:
        return RunStarted.make(
            run=self.ref,
            run_name="bench",
            pipeline_name="bench",
            experiment="latency",
            node=NODE,
            volumes=self.volumes,
            started_at=datetime.now(UTC),
        )

    def events(self, count: int) -> list[tuple[StepStarted | StepFinished, tuple[str, str | None, str]]]:
        """``count`` events: a step's start and finish, step after step."""
        out: list[tuple[StepStarted | StepFinished, tuple[str, str | None, str]]] = []
        while len(out) < count:
            step = StepRef(run=self.ref, step_id=f"{self.ref.workflow_uid}-{self.steps}", name=f"step-{self.steps}")
            self.steps += 1
            common = {"step": step, "node": NODE, "volumes": self.volumes, "guarded": True}
            out.append(
                (
                    StepStarted.make(**common, started_at=datetime.now(UTC)),
                    (self.ref.workflow_uid, step.step_id, "before"),
                )
            )
            out.append(
                (
                    StepFinished.make(**common, outcome="succeeded", finished_at=datetime.now(UTC)),
                    (self.ref.workflow_uid, step.step_id, "after"),
                )
            )
        return out[:count]


async def one_by_one(nc: Client, waiter: Waiter, run: Run, count: int) -> list[float]:
    js = nc.jetstream()
    latencies = []
    for event, key in run.events(count):
        done = waiter.expect(key)
        sent = time.perf_counter()
        await bus.publish(js, event)
        latencies.append(await asyncio.wait_for(done, 60) - sent)
    return latencies


async def start_runs(nc: Client, waiter: Waiter, runs: list[Run]) -> None:
    js = nc.jetstream()
    pending = []
    for run in runs:
        pending.append(waiter.expect((run.ref.workflow_uid, None, "initial")))
        await bus.publish(js, run.started())
    await asyncio.wait_for(asyncio.gather(*pending), 600)


def report(label: str, latencies: list[float], wall: float) -> dict[str, float]:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    figures = {
        "events": len(ordered),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": ordered[-1] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
        "versions_per_s": len(ordered) / wall,
    }
    print(
        f"{label:<28} n={figures['events']:<4} p50 {figures['p50_ms']:7.1f} ms   p90 {figures['p90_ms']:7.1f} ms   "
        f"p99 {figures['p99_ms']:7.1f} ms   max {figures['max_ms']:7.1f} ms   "
        f"{figures['versions_per_s']:6.1f} versions/s"
    )
    return figures


async def measure(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="rok-latency-"))
    processes: list[Process] = []
    try:
        volume = root / "volume"
        print(f"volume: {args.size_mb} MB of random data in {volume} (unchanged after the first snapshot)")
        make_volume(volume, args.size_mb)
        nats_url, processes = start_system(root, args)
        nc = await nats.connect(nats_url)
        await streams.ensure_streams(nc.jetstream())
        waiter = Waiter()
        await nc.subscribe(subjects.VERSION_COMMITTED, cb=waiter.on_commit)

        first = Run(volume)
        started = time.perf_counter()
        await start_runs(nc, waiter, [first])
        print(f"first (full) snapshot of the volume and its version: {time.perf_counter() - started:.2f} s")
        await one_by_one(nc, waiter, first, args.warmup)

        results = {}
        cpu = CpuMeter(processes)
        started = time.perf_counter()
        sequential = await one_by_one(nc, waiter, first, args.events)
        results["one at a time"] = report("one event at a time", sequential, time.perf_counter() - started)
        cpu.report(len(sequential), time.perf_counter() - started)

        # each run its own volume, as each KFP run gets its own clones of the notebook's volumes: a hard-linked
        # copy (same content, another path, so another cache entry; its first snapshot reads it once)
        runs = []
        for i in range(args.runs):
            copy = root / f"volume-{i}"
            await asyncio.to_thread(subprocess.run, ["cp", "-al", str(volume), str(copy)], check=True)
            runs.append(Run(copy))
        await start_runs(nc, waiter, runs)
        per_run = max(2, args.events // args.runs)
        cpu = CpuMeter(processes)
        started = time.perf_counter()
        concurrent = await asyncio.gather(*(one_by_one(nc, waiter, run, per_run) for run in runs))
        flat = [x for run in concurrent for x in run]
        results[f"{args.runs} runs in flight"] = report(
            f"{args.runs} runs in flight", flat, time.perf_counter() - started
        )
        cpu.report(len(flat), time.perf_counter() - started)
        await nc.close()
        if args.json:
            print(json.dumps(results, indent=1))
        if args.spans:
            await asyncio.sleep(0.5)  # the processes' span exporters write every 0.2 s
            print_stages(root / "spans.jsonl")
    finally:
        for p in reversed(processes):
            p.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


class CpuMeter:
    """CPU time each process (and this one, the publisher) spent during a load: what a version costs."""

    def __init__(self, processes: list[Process]) -> None:
        import psutil

        self.processes = {p.name: psutil.Process(p.popen.pid) for p in processes if p.popen is not None}
        self.processes["bench (publisher)"] = psutil.Process()
        self.start = {name: self._seconds(proc) for name, proc in self.processes.items()}

    @staticmethod
    def _seconds(proc: object) -> float:
        times = proc.cpu_times()  # type: ignore[attr-defined]
        return float(times.user + times.system)

    def report(self, versions: int, wall: float) -> None:
        used = {name: self._seconds(proc) - self.start[name] for name, proc in self.processes.items()}
        parts = ", ".join(f"{name} {1000 * sec / versions:.1f}" for name, sec in used.items())
        total = sum(used.values())
        print(
            f"{'':<28} CPU ms per version: {parts}; total {1000 * total / versions:.1f} "
            f"({total / wall:.2f} of {os.cpu_count()} cores busy)"
        )


def print_stages(spans_file: Path) -> None:
    """Where the time went, per process and span name (over both loads), largest total first."""
    durations: dict[tuple[str, str], list[float]] = {}
    for line in spans_file.read_text().splitlines():
        span = json.loads(line)
        if span["name"].endswith(" create"):
            continue
        durations.setdefault((span["service"], span["name"]), []).append((span["end"] - span["start"]) / 1e6)
    print("stages (ms):")
    for (service, name), values in sorted(durations.items(), key=lambda kv: -sum(kv[1]))[:12]:
        values.sort()
        p50, p90 = values[len(values) // 2], values[int(len(values) * 0.9)]
        print(f"  {service:<16} {name[:48]:<48} n={len(values):<5} p50 {p50:7.1f}  p90 {p90:7.1f}  ", end="")
        print(f"total {sum(values):8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100, help="volume size (default 100)")
    parser.add_argument("--events", type=int, default=300, help="events per load (default 300)")
    parser.add_argument("--runs", type=int, default=20, help="runs in flight in the second load (default 20)")
    parser.add_argument("--warmup", type=int, default=10, help="events before measuring (default 10)")
    parser.add_argument(
        "--snapshot-concurrency", type=int, default=2, help="the snapshotter's ROK_SNAPSHOT_CONCURRENCY (default 2)"
    )
    parser.add_argument("--s3", default="", help="s3://bucket/prefix repository (AWS_* variables) instead of file://")
    parser.add_argument("--postgres", default="", help="PostgreSQL DSN for the registry instead of SQLite")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--spans", action="store_true", help="also print where the time went, from the spans")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, repository)")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
