"""Looking inside a version without restoring it, beside restoring it: the browser's endpoint and ``rok mount``.

Run: ``uv run python bench/browse_bench.py [--size 512MiB] [--backend file|s3|both] [--runs 3] [--workdir DIR]``.

One volume of the benchmark's data set (a tree of >12,000 small files and a few large binary files, ``dataset.py``)
is snapshotted into a repository on each backend (a local directory; ``rclone serve s3`` on loopback). Then, each
run with a restorer started afresh (nothing of the snapshot in its memory; the node-local index cache kept, as on a
node that served the repository before) and a registry stand-in answering ``resolve``:

- **endpoint, first byte**: one small file's first 4 KiB asked on ``rok.store.browse.v1`` (what the web page and
  ``rok cat`` do), from nothing: resolve, open the snapshot, walk the trees on the path, fetch and check one chunk;
- **endpoint, large file**: the largest file read whole through the endpoint, piece after piece (MB/s);
- **mount, first byte**: ``rok mount`` of the volume, then the small file's first 4 KiB read through the kernel;
- **mount, large file**: the largest file read whole through the mount (MB/s);
- **full restore**: the whole volume restored by the store engine into an empty directory (what a restore must
  do before anyone can look at one file).

The figures are medians over the runs, with their spread; the machine's load is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack, ExitStack
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import dataset
import nats
from nats.aio.msg import Msg
from rok_restorer.main import build
from rok_restorer.settings import RestorerSettings
from rokcli.mount import is_mounted
from rokcommon import subjects
from rokcommon.browse import BrowseClient, read_size
from rokcommon.registry_contract import Member, Reply, Resolve, Resolved, Version
from rokcommon.urls import format_url
from rokstore import init_repository, open_repository, restore, snapshot
from roktesting.nats import NatsServer, running
from roktesting.s3 import serve_s3

ROOT = Path(__file__).resolve().parent.parent
ROK = str(ROOT / ".venv" / "bin" / "rok")
NAMESPACE = "bench"
VOLUME_URL = format_url(NAMESPACE, "exp", "run", "v0000001", "data")
HEAD = 4096


def parse_size(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def pick_files(volume: Path) -> tuple[str, str, int]:
    """(a small file deep in the tree, the largest file, its size), as paths within the volume."""
    small = next(p for p in sorted((volume / "env").rglob("*.py")) if 500 < p.stat().st_size < 8000)
    large = max((p for p in (volume / "data").iterdir()), key=lambda p: p.stat().st_size)
    return str(small.relative_to(volume)), str(large.relative_to(volume)), large.stat().st_size


class Registry:
    def __init__(self, member: Member) -> None:
        version = Version(
            id="v0000001",
            url=format_url(NAMESPACE, "exp", "run", "v0000001"),
            namespace=NAMESPACE,
            bucket="exp",
            file="run",
            workflow_uid="wf",
            run_id="run",
            phase="initial",
            taken_at=datetime.now(UTC),
            status="complete",
            volumes=("data",),
            members=(member,),
        )
        self.resolved = Resolved(url=VOLUME_URL, version=version, members=(member,))

    async def on_resolve(self, msg: Msg) -> None:
        Resolve.model_validate_json(msg.data)
        await msg.respond(Reply(result=self.resolved.model_dump(mode="json")).model_dump_json().encode())


async def one_run(
    server: NatsServer, repo_url: str, sid: str, files: tuple[str, str, int], work: Path, env: dict[str, str]
) -> dict[str, float]:
    small, large, large_size = files
    out: dict[str, float] = {}
    nc = await nats.connect(server.url)
    member = Member(volume="data", snapshot_id=sid, repository=repo_url, url=VOLUME_URL)
    sub = await nc.subscribe(subjects.registry_query("resolve"), cb=Registry(member).on_resolve)
    state = work / f"state-{secrets.token_hex(3)}"
    shutil.copytree(work / "cache", state / "cache")  # the node's index cache, as a long-running restorer has it
    settings = RestorerSettings(nats_url=server.url, state_dir=state, log_format="text", log_level="WARNING")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running(build(settings)))
        client = BrowseClient(nc, NAMESPACE)
        started = time.perf_counter()
        head = await client.read(VOLUME_URL, small, 0, HEAD)
        out["endpoint first byte (s)"] = time.perf_counter() - started
        assert head, small
        started = time.perf_counter()
        offset, piece = 0, read_size(nc)
        while offset < large_size:
            offset += len(await client.read(VOLUME_URL, large, offset, piece))
        out["endpoint large file (MB/s)"] = large_size / (time.perf_counter() - started) / 1e6

    # the mount, against a restorer started afresh again
    state = work / f"state-{secrets.token_hex(3)}"
    shutil.copytree(work / "cache", state / "cache")
    settings = RestorerSettings(nats_url=server.url, state_dir=state, log_format="text", log_level="WARNING")
    mnt = work / f"mnt-{secrets.token_hex(3)}"
    mnt.mkdir()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running(build(settings)))
        process = await asyncio.create_subprocess_exec(
            ROK, "mount", VOLUME_URL, str(mnt), env=env, stderr=asyncio.subprocess.PIPE
        )
        assert process.stderr is not None
        line = (await process.stderr.readline()).decode()
        assert line.startswith("mounted"), line
        try:

            def first_byte() -> float:
                begun = time.perf_counter()
                with open(mnt / small, "rb") as f:
                    f.read(HEAD)
                return time.perf_counter() - begun

            def whole() -> float:
                begun = time.perf_counter()
                with open(mnt / large, "rb") as f:
                    while f.read(1 << 20):
                        pass
                return large_size / (time.perf_counter() - begun) / 1e6

            out["mount first byte (s)"] = await asyncio.to_thread(first_byte)
            out["mount large file (MB/s)"] = await asyncio.to_thread(whole)
        finally:
            await asyncio.to_thread(subprocess.run, [ROK, "umount", str(mnt)], check=False)
            await process.wait()
        assert not is_mounted(mnt)
    await sub.unsubscribe()
    await nc.close()

    target = work / f"restored-{secrets.token_hex(3)}"
    cache = work / f"cache-{secrets.token_hex(3)}"
    shutil.copytree(work / "cache", cache)
    async with await open_repository(repo_url, cache_dir=cache) as repo:
        started = time.perf_counter()
        await restore(repo, sid, target)
        out["full restore (s)"] = time.perf_counter() - started
    shutil.rmtree(target)
    return out


async def bench(backend: str, volume: Path, size: int, runs: int, work: Path, s3_env: dict[str, str]) -> None:
    repo_url = (work / "repo").as_uri() if backend == "file" else f"s3://bench-{secrets.token_hex(4)}/repo"
    if backend == "s3":
        os.environ.update(s3_env)
        (Path(s3_env["ROK_BENCH_S3_ROOT"]) / repo_url.removeprefix("s3://").split("/")[0]).mkdir()
    started = time.perf_counter()
    async with await init_repository(repo_url, cache_dir=work / "cache") as repo:
        stats = await snapshot(repo, volume)
    took = time.perf_counter() - started
    print(f"\n{backend}: snapshot of {stats.files} files, {stats.bytes_scanned / 1e6:.0f} MB in {took:.1f}s")
    files = pick_files(volume)
    print(f"small file: {files[0]}; large file: {files[1]} ({files[2] / 1e6:.0f} MB)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROK_")}
    figures: dict[str, list[float]] = {}
    server = NatsServer(work / f"nats-{backend}")
    server.start()
    try:
        env |= {"ROK_NATS_URL": server.url, "ROK_NAMESPACE": NAMESPACE, "ROK_STATE_DIR": str(work / "cli")}
        for _ in range(runs):
            for key, value in (await one_run(server, repo_url, stats.snapshot_id, files, work, env)).items():
                figures.setdefault(key, []).append(value)
    finally:
        server.stop()
    width = max(len(k) for k in figures)
    print(f"{'':<{width}}  median   (min–max over {runs} runs)")
    for key, values in figures.items():
        print(f"{key:<{width}}  {statistics.median(values):7.3f}  ({min(values):.3f}–{max(values):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512MiB")
    parser.add_argument("--backend", choices=["file", "s3", "both"], default="both")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    size = parse_size(args.size)
    base = args.workdir or Path(tempfile.gettempdir()) / "rok-browse-bench"
    base.mkdir(parents=True, exist_ok=True)
    volume = base / "volume"
    counts = dataset.build(volume, size)
    print(f"volume: {counts}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    backends = ["file", "s3"] if args.backend == "both" else [args.backend]
    with ExitStack() as stack:
        s3_env: dict[str, str] = {}
        if "s3" in backends:
            (base / "s3").mkdir(exist_ok=True)
            server = stack.enter_context(serve_s3(base / "s3"))
            s3_env = server.env() | {"ROK_BENCH_S3_ROOT": str(server.root)}
        for backend in backends:
            work = base / f"work-{backend}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            try:
                asyncio.run(bench(backend, volume, size, args.runs, work, s3_env))
            finally:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
