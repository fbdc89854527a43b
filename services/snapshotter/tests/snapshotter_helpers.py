"""Helpers for the snapshotter's tests: events, volumes, and reading what the snapshotter published."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from rok_snapshotter.repository import RepositoryHandle
from rokcommon import streams
from rokcommon.events import Event, RunRef, StepRef, StepStarted, VolumeRef, model_for_subject
from rokstore import Progress, SnapshotStats, snapshot

NODE = "node-1.example.internal"
RUN = RunRef(namespace="team-a", run_id="run-1", workflow_uid="wf-1")


def step(step_id: str = "wf-1-100", name: str = "train") -> StepRef:
    return StepRef(run=RUN, step_id=step_id, name=name)


def started(volumes: tuple[VolumeRef, ...], *, node: str = NODE, step_id: str = "wf-1-100") -> StepStarted:
    return StepStarted.make(step=step(step_id), node=node, volumes=volumes, started_at=datetime.now(UTC))


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by relative path, with its content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


async def snapshot_events(js: JetStreamContext, count: int, timeout: float = 20.0) -> list[Event]:
    """The first ``count`` events on ``rok.snapshot.>``, decoded (waiting for them)."""
    sub = await js.subscribe(
        "rok.snapshot.>",
        stream=streams.SNAPSHOTS.name,
        ordered_consumer=True,
    )
    events: list[Event] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(events) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=remaining)
            except TimeoutError:
                break
            events.append(model_for_subject(msg.subject).decode(msg.data))
    finally:
        await sub.unsubscribe()
    return events


async def settled(js: JetStreamContext, durable: str, timeout: float = 20.0) -> None:
    """Wait until the consumer has nothing pending or unacknowledged."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        info = await js.consumer_info(streams.PIPELINE.name, durable)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"consumer {durable} did not settle: {info}")


class ObservedRepository:
    """The real repository, with a hook awaited before each snapshot (to slow it down or hold it), counting how
    many snapshots run at once."""

    def __init__(self, url: str, cache_dir: Path, before: Callable[[Callable[[Progress], None]], Awaitable[None]]):
        self.url = url
        self._handle = RepositoryHandle(url, cache_dir=cache_dir)
        self.before = before
        self.active = 0
        self.peak = 0
        self.calls = 0
        self.running: list[str] = []  # what each snapshot in flight is of: "<step or run> <phase> <volume>"

    async def get(self) -> ObservedRepository:
        return self

    async def snapshot(self, path: Path, **options: Any) -> SnapshotStats:
        self.calls += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        tags = options.get("tags", {})
        what = f"{tags.get('rok.step', 'run')} {tags.get('rok.phase')} {tags.get('rok.volume')}"
        self.running.append(what)
        try:
            await self.before(options["progress"])
            repo = await self._handle.get()
            return await snapshot(repo, path, **options)
        finally:
            self.active -= 1
            self.running.remove(what)

    async def close(self) -> None:
        await self._handle.close()

    async def diff(self, a: str, b: str) -> Any:
        return await self._handle.diff(a, b)
