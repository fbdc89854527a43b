"""The snapshotter's share of the event-to-version latency: from the publish of a step event to its
``SnapshotCompleted``, for a volume of ~100 MB that has not changed since the last snapshot.

Run: ``uv run python bench/snapshotter_latency.py [--events 300] [--runs 20] [--size-mb 100] [--files 100]``.
A real ``nats-server -js`` and ``python -m rok_snapshotter`` run as child processes over a ``file://``
repository. After a first (full) snapshot of every volume, it publishes ``--events`` step events one after the
other (each waits for its SnapshotCompleted), then the same number with ``--runs`` runs in flight at once (one
volume per run, the same files hard-linked into each), and prints p50/p90/p99/max of each series.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import nats
from rokcommon import bus, streams
from rokcommon.events import RunRef, SnapshotCompleted, StepRef, StepStarted, VolumeRef
from roktesting.ports import free_port, wait_for_port

NODE = "bench-node"


def volumes(root: Path, runs: int, size_mb: int, files: int) -> list[VolumeRef]:
    first = root / "run-0"
    first.mkdir(parents=True)
    per_file = size_mb * (1 << 20) // files
    for i in range(files):
        (first / f"part-{i:04d}.bin").write_bytes(os.urandom(per_file))
    for r in range(1, runs):
        (root / f"run-{r}").mkdir()
        for f in first.iterdir():
            os.link(f, root / f"run-{r}" / f.name)
    return [VolumeRef(name="workspace", role="workspace", path=str(root / f"run-{r}")) for r in range(runs)]


def step_event(run: int, n: int, volume: VolumeRef) -> StepStarted:
    ref = RunRef(namespace="bench", run_id=f"run-{run}", workflow_uid=f"wf-{run}")
    step = StepRef(run=ref, step_id=f"wf-{run}-{n}", name=f"step-{n}")
    return StepStarted.make(step=step, node=NODE, volumes=(volume,), guarded=True, started_at=datetime.now(UTC))


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return f"n={len(ms)}  p50={q[49]:.1f} ms  p90={q[89]:.1f} ms  p99={q[98]:.1f} ms  max={ms[-1]:.1f} ms"


async def measure(args: argparse.Namespace, work: Path) -> None:
    port = free_port()
    nats_proc = subprocess.Popen(  # noqa: ASYNC220
        ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(work / "nats")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, what="nats-server")
    url = f"nats://127.0.0.1:{port}"
    refs = volumes(work / "volumes", args.runs, args.size_mb, args.files)
    env = {
        **os.environ,
        "ROK_NATS_URL": url,
        "ROK_NODE_NAME": NODE,
        "ROK_STATE_DIR": str(work / "state"),
        "ROK_VOLUME_ROOTS": str(work / "volumes"),
        "ROK_LOG_LEVEL": "WARNING",
        "ROK_SNAPSHOT_CONCURRENCY": str(args.concurrency),
    }
    nc = await nats.connect(url)
    js = nc.jetstream()
    await streams.ensure_streams(js)
    done: dict[str, asyncio.Future[float]] = {}

    async def on_completed(msg: nats.aio.msg.Msg) -> None:
        event = SnapshotCompleted.decode(msg.data)
        key = event.step.step_id if event.step else ""
        if key in done and not done[key].done():
            done[key].set_result(time.perf_counter())

    await nc.subscribe("rok.snapshot.completed.v1", cb=on_completed)
    snapshotter = subprocess.Popen([sys.executable, "-m", "rok_snapshotter"], env=env)  # noqa: ASYNC220
    try:

        async def one(run: int, n: int) -> float:
            event = step_event(run, n, refs[run])
            future = done[event.step.step_id] = asyncio.get_running_loop().create_future()
            start = time.perf_counter()
            await bus.publish(js, event)
            return await asyncio.wait_for(future, 120) - start

        print(f"volumes: {args.runs} x {args.size_mb} MB in {args.files} files; concurrency {args.concurrency}")
        t = time.perf_counter()
        await asyncio.gather(*(one(r, 0) for r in range(args.runs)))  # the first, full snapshots
        print(f"first snapshots of {args.runs} volumes: {time.perf_counter() - t:.1f} s")
        for n in range(1, 6):  # warm up
            await one(0, n)
        serial = [await one(0, 100 + n) for n in range(args.events)]
        print(f"unchanged volume, one event at a time:      {percentiles(serial)}")
        rounds = max(1, args.events // args.runs)
        parallel: list[float] = []
        for n in range(rounds):
            parallel += await asyncio.gather(*(one(r, 1000 + n) for r in range(args.runs)))
        print(f"unchanged volumes, {args.runs} runs in flight at once: {percentiles(parallel)}")
    finally:
        snapshotter.send_signal(signal.SIGTERM)
        snapshotter.wait(30)
        await nc.close()
        nats_proc.terminate()
        nats_proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rok-snapshotter-bench-"))
    try:
        asyncio.run(measure(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
