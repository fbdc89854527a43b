"""Helpers for the snapshotter's tests: events, volumes, and reading what the snapshotter published."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from nats.js import JetStreamContext
from rokcommon import streams
from rokcommon.events import Event, RunRef, StepRef, StepStarted, VolumeRef, model_for_subject

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
