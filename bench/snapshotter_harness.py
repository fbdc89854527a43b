"""A real ``nats-server -js`` and ``python -m rok_snapshotter`` as child processes, and the time from a step
event's publish to its ``SnapshotCompleted`` — what the snapshotter benchmarks measure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
from rokcommon import bus, streams
from rokcommon.events import SnapshotCompleted, StepStarted
from roktesting.ports import free_port, wait_for_port

NODE = "bench-node"


class Snapshotter:
    """Publishes step events and waits for each one's ``SnapshotCompleted``."""

    def __init__(self, js: nats.js.JetStreamContext) -> None:
        self.js = js
        self.done: dict[str, asyncio.Future[float]] = {}

    async def on_completed(self, msg: nats.aio.msg.Msg) -> None:
        event = SnapshotCompleted.decode(msg.data)
        key = event.step.step_id if event.step else ""
        if key in self.done and not self.done[key].done():
            self.done[key].set_result(time.perf_counter())

    async def snapshot(self, event: StepStarted, timeout: float = 600) -> float:
        """Seconds from the publish of ``event`` to its SnapshotCompleted."""
        future = self.done[event.step.step_id] = asyncio.get_running_loop().create_future()
        start = time.perf_counter()
        await bus.publish(self.js, event)
        return await asyncio.wait_for(future, timeout) - start


@contextlib.asynccontextmanager
async def running_snapshotter(work: Path, env: dict[str, str]) -> AsyncIterator[Snapshotter]:
    """nats-server (its store under ``work``) and the snapshotter with ``env`` (``ROK_*`` settings) added to
    this process's environment; both stopped on the way out."""
    port = free_port()
    nats_proc = subprocess.Popen(  # noqa: ASYNC220
        ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(work / "nats")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, what="nats-server")
        url = f"nats://127.0.0.1:{port}"
        nc = await nats.connect(url)
        js = nc.jetstream()
        await streams.ensure_streams(js)
        harness = Snapshotter(js)
        await nc.subscribe("rok.snapshot.completed.v1", cb=harness.on_completed)
        settings = {"ROK_NATS_URL": url, "ROK_NODE_NAME": NODE, "ROK_LOG_LEVEL": "WARNING", **env}
        environment = {**os.environ, **settings}
        snapshotter = subprocess.Popen([sys.executable, "-m", "rok_snapshotter"], env=environment)  # noqa: ASYNC220
        try:
            yield harness
        finally:
            snapshotter.send_signal(signal.SIGTERM)
            snapshotter.wait(30)
            await nc.close()
    finally:
        nats_proc.terminate()
        nats_proc.wait()
