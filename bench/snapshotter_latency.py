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
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rokcommon.events import RunRef, StepRef, StepStarted, VolumeRef
from snapshotter_harness import NODE, running_snapshotter


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
    refs = volumes(work / "volumes", args.runs, args.size_mb, args.files)
    env = {
        "ROK_STATE_DIR": str(work / "state"),
        "ROK_VOLUME_ROOTS": str(work / "volumes"),
        "ROK_SNAPSHOT_CONCURRENCY": str(args.concurrency),
    }
    async with running_snapshotter(work, env) as snapshotter:

        async def one(run: int, n: int) -> float:
            return await snapshotter.snapshot(step_event(run, n, refs[run]), timeout=120)

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
