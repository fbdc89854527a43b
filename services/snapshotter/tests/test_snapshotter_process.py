"""``python -m rok_snapshotter`` as its own process: ready (and saying so on /readyz), snapshotting, stopped by
SIGTERM, killed mid-snapshot."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from rok_snapshotter.settings import SnapshotterSettings
from rokcommon import bus, streams
from rokcommon.events import SnapshotCompleted, VolumeRef
from rokstore import open_repository, restore
from roktesting.health import get_json
from roktesting.ports import free_port
from snapshotter_helpers import settled, snapshot_events, started, tree

DURABLE = "snapshotter-node-1_example_internal"


class Process:
    """The snapshotter in a child process, its JSON log lines in a file."""

    def __init__(self, settings: SnapshotterSettings, log: Path) -> None:
        self.log = log
        self.health_port = free_port()
        env = {
            **os.environ,
            "ROK_NATS_URL": settings.nats_url,
            "ROK_NODE_NAME": settings.node_name,
            "ROK_STATE_DIR": str(settings.state_dir),
            "ROK_REPOSITORY": settings.repository_url,
            "ROK_KUBELET_PODS_DIR": str(settings.kubelet_pods_dir),
            "ROK_VOLUME_ROOTS": settings.volume_roots,
            "ROK_ACK_WAIT": str(settings.ack_wait),
            "ROK_RETRY_DELAY": str(settings.retry_delay),
            "ROK_LOG_FORMAT": "json",
            "ROK_HEALTH_PORT": str(self.health_port),
        }
        with open(log, "ab") as out:
            self.popen = subprocess.Popen([sys.executable, "-m", "rok_snapshotter"], env=env, stderr=out)

    def lines(self) -> list[dict[str, object]]:
        found = []
        for line in self.log.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    async def ready(self, timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if any(line.get("message") == "snapshotter ready" for line in self.lines()):
                return
            assert self.popen.poll() is None, f"the snapshotter exited: {self.log.read_text()[-2000:]}"
            await asyncio.sleep(0.05)
        raise AssertionError(f"the snapshotter never logged that it is ready: {self.log.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        self.popen.send_signal(sig)
        return self.popen.wait(timeout=timeout)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait()


async def test_the_service_logs_ready_snapshots_and_stops_cleanly_on_sigterm(
    settings_for: Callable[..., SnapshotterSettings],
    js: JetStreamContext,
    volumes: tuple[VolumeRef, ...],
    processes: list[Process],
    tmp_path: Path,
) -> None:
    settings = settings_for()
    process = Process(settings, tmp_path / "snapshotter.log")
    processes.append(process)
    await process.ready()
    status, body = await asyncio.to_thread(get_json, f"http://127.0.0.1:{process.health_port}/readyz")
    assert (status, body["checks"]) == (200, {"nats": "ok", "nats-open": "ok", "consumers": "ok", "store": "ok"})
    assert (await asyncio.to_thread(get_json, f"http://127.0.0.1:{process.health_port}/livez"))[0] == 200
    await bus.publish(js, started(volumes))
    done = await snapshot_events(js, 2)
    await settled(js, DURABLE)
    assert sorted(e.volume.name for e in done if isinstance(e, SnapshotCompleted)) == ["data", "workspace"]
    assert process.stop(signal.SIGTERM) == 0
    messages = [line.get("message") for line in process.lines()]
    assert "snapshotter stopping: finishing in-flight messages, leaving the rest for redelivery" in messages


async def test_a_snapshotter_killed_mid_snapshot_takes_it_once_after_its_restart(
    settings_for: Callable[..., SnapshotterSettings],
    js: JetStreamContext,
    processes: list[Process],
    tmp_path: Path,
) -> None:
    volume_dir = tmp_path / "big"
    volume_dir.mkdir()
    for i in range(8):  # 128 MiB of incompressible data: several packs, so the kill lands between them
        (volume_dir / f"part-{i}.bin").write_bytes(os.urandom(16 << 20))
    volume = VolumeRef(name="workspace", role="workspace", path=str(volume_dir))
    settings = settings_for(ack_wait=2.0)
    repo_dir = tmp_path / "repo"

    first = Process(settings, tmp_path / "first.log")
    processes.append(first)
    await first.ready()
    await bus.publish(js, started((volume,)))
    deadline = asyncio.get_running_loop().time() + 30
    while not any((repo_dir / "packs").glob("*/*")):  # the first pack is stored: the snapshot is under way
        assert asyncio.get_running_loop().time() < deadline, first.log.read_text()[-2000:]
        await asyncio.sleep(0.005)
    first.stop(signal.SIGKILL)
    assert not any((repo_dir / "snapshots").glob("*")), "the snapshot finished before the kill"

    second = Process(settings, tmp_path / "second.log")
    processes.append(second)
    await second.ready()
    [done] = await snapshot_events(js, 1, timeout=60)
    await settled(js, DURABLE, timeout=30)
    assert second.stop(signal.SIGTERM) == 0

    assert isinstance(done, SnapshotCompleted)
    stream = await js.stream_info(streams.SNAPSHOTS.name)
    assert stream.state.messages == 1  # announced once
    async with await open_repository(settings.repository_url) as repo:
        assert [s.id for s in await repo.list_snapshots()] == [done.snapshot_id]
        await restore(repo, done.snapshot_id, tmp_path / "restored")
    assert tree(tmp_path / "restored") == tree(volume_dir)
