"""How long the step guard holds a step: from a ``StepStarted`` to its ``SnapshotCompleted``, measured in the
long-running snapshotter on S3, next to restic snapshotting the same volume as a fresh process.

Run: ``uv run python bench/step_wait.py [--events 15] [--restic-runs 5] [--workdir DIR]``.
A real ``nats-server -js``, ``rclone serve s3`` on loopback and ``python -m rok_snapshotter`` (repository on that
S3 server) run as child processes. The volume is the store benchmark's data set (a site-packages copy topped up
to ~27,000 files, and large files among which a 96 MiB one). After the first, full snapshot it publishes
``--events`` step events for the unchanged volume, then as many each after appending one byte to the 96 MiB
file, each waiting for its SnapshotCompleted; restic backs the same volume up into a repository on the same
server, as a fresh process each time (what a restic-based integration pays per step), unchanged and after the
same append. Prints p50/p90/max of each series side by side. Targets: p50 ≤ 0.15 s unchanged, ≤ 0.35 s small
change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import dataset
from rokcommon.events import RunRef, StepRef, StepStarted, VolumeRef
from roktesting.s3 import serve_s3
from snapshotter_harness import NODE, running_snapshotter

FILES = 27_000
BIG = 96 << 20
RACY_WINDOW = 0.06  # seconds: a file changed closer than this to a snapshot's start is read again next time


def build_volume(root: Path) -> Path:
    """The data set, topped up with small text files to ~27,000 files, and one 96 MiB file."""
    counts = dataset.build(root / "volume", 64 << 20)
    volume = root / "volume"
    extra = volume / "notes"
    extra.mkdir(exist_ok=True)
    for i in range(max(0, FILES - counts["files"])):
        (extra / f"note-{i:05d}.txt").write_text(f"note {i}\n" * (1 + i % 40))
    with open(volume / "data" / "model-96MiB.bin", "wb") as f:
        f.write(os.urandom(BIG))
    time.sleep(RACY_WINDOW)
    return volume


def append_a_byte(volume: Path) -> None:
    with open(volume / "data" / "model-96MiB.bin", "ab") as f:
        f.write(b"\x01")
    time.sleep(RACY_WINDOW)


def step_event(n: int, volume: Path) -> StepStarted:
    run = RunRef(namespace="bench", run_id="run-0", workflow_uid="wf-0")
    step = StepRef(run=run, step_id=f"wf-0-{n}", name=f"step-{n}")
    ref = VolumeRef(name="workspace", role="workspace", path=str(volume))
    return StepStarted.make(step=step, node=NODE, volumes=(ref,), guarded=True, started_at=datetime.now(UTC))


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[8] if len(ms) > 1 else ms[0]
    return f"p50 {statistics.median(ms):7.0f} ms   p90 {p90:7.0f} ms   max {ms[-1]:7.0f} ms   (n={len(ms)})"


async def in_service(
    args: argparse.Namespace, work: Path, volume: Path, s3_env: dict[str, str]
) -> dict[str, list[float]]:
    env = {
        **s3_env,
        "ROK_STATE_DIR": str(work / "state"),
        "ROK_REPOSITORY": "s3://rok-step-wait/repo",
        "ROK_VOLUME_ROOTS": str(work),
        "ROK_CACHE_DIR": str(work / "rok-cache"),
    }
    async with running_snapshotter(work, env) as snapshotter:

        async def one(n: int) -> float:
            return await snapshotter.snapshot(step_event(n, volume))

        print(f"rok: first snapshot {await one(0):.1f} s", file=sys.stderr)
        await one(1)  # the first one the node-local cache knows
        unchanged = [await one(10 + n) for n in range(args.events)]
        changed = []
        for n in range(args.events):
            append_a_byte(volume)
            changed.append(await one(100 + n))
        return {"unchanged": unchanged, "small change": changed}


def restic(
    args: argparse.Namespace, work: Path, volume: Path, s3_env: dict[str, str], s3_root: Path
) -> dict[str, list[float]]:
    (s3_root / "restic-step-wait").mkdir()
    env = {
        **os.environ,
        **s3_env,
        "RESTIC_PASSWORD": "bench-password",
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
        "RESTIC_REPOSITORY": f"s3:{s3_env['AWS_ENDPOINT_URL']}/restic-step-wait/repo",
    }

    def backup() -> float:
        started = time.perf_counter()
        subprocess.run(["restic", "backup", "--quiet", str(volume)], env=env, check=True, capture_output=True)
        return time.perf_counter() - started

    subprocess.run(["restic", "init"], env=env, check=True, capture_output=True)
    print(f"restic: first backup {backup():.1f} s", file=sys.stderr)
    unchanged = [backup() for _ in range(args.restic_runs)]
    changed = []
    for _ in range(args.restic_runs):
        append_a_byte(volume)
        changed.append(backup())
    return {"unchanged": unchanged, "small change": changed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=15, help="step events per series (default 15)")
    parser.add_argument("--restic-runs", type=int, default=5, help="restic backups per series (default 5)")
    parser.add_argument("--workdir", default="/tmp/rok-step-wait", help="scratch directory")
    args = parser.parse_args()
    if shutil.which("restic") is None:
        sys.exit("restic not found: apt-get install -y restic")
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        volume = build_volume(work)
        files = sum(len(names) for _, _, names in os.walk(volume))
        s3_root = work / "s3"
        s3_root.mkdir()
        with serve_s3(s3_root) as server:
            s3_env = server.env()
            (s3_root / "rok-step-wait").mkdir()
            rok = asyncio.run(in_service(args, work, volume, s3_env))
            peer = restic(args, work, volume, s3_env, s3_root)
        print(f"volume: {files} files, one of 96 MiB appended to for each small change; S3 = rclone serve s3")
        print(f"{'':<14}{'rok: StepStarted → SnapshotCompleted, in service':<62}| restic backup, a fresh process")
        for series in ("unchanged", "small change"):
            print(f"{series:<14}{summary(rok[series]):<62}| {summary(peer[series])}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
