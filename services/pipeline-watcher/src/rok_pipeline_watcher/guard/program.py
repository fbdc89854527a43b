"""What the step guard does inside a step pod (``rok-guard run``) and how its startup probe answers.

1. Follow ``rok.version.committed.v1`` and wait (at most ``before_timeout``) for this step's before-snapshot.
   Then write the ready file: the startup probe (``rok-guard probe``) succeeds from then on, and Kubernetes
   starts the step's containers. On timeout the step starts anyway: best effort, logged.
2. Wait for SIGTERM: Kubernetes sends it once the step's main containers have ended, while the volumes are
   still mounted. Wait (at most ``after_timeout``) for the after-snapshot's commit, then exit, letting the
   pod end and its volumes go.

The guard never fails a step: NATS unreachable, no commit in time, all end in "go on" and a log line.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pydantic import Field
from rokcommon.settings import RokSettings

log = logging.getLogger(__name__)


class GuardSettings(RokSettings):
    guard_workflow_uid: str = Field("", description="uid of the step's Argo workflow")
    guard_step_id: str = Field("", description="the step's Argo node id")
    guard_before_timeout: float = Field(600.0, ge=0, description="seconds to hold the step for its before-snapshot")
    guard_after_timeout: float = Field(600.0, ge=0, description="seconds to hold the pod's end for its after-snapshot")
    guard_ready_file: Path = Field(Path("/tmp/rok-guard-ready"), description="exists once the step may start")


def probe(ready_file: Path) -> bool:
    """The startup probe: has the guard let the step start?"""
    return ready_file.exists()


async def _first(*aws: asyncio.Future[object] | asyncio.Task[object]) -> None:
    _, pending = await asyncio.wait(aws, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


async def run(settings: GuardSettings, stop: asyncio.Event) -> None:
    """Guard one step until ``stop`` is set (SIGTERM) and the after-snapshot is committed (or time is up).

    Whatever goes wrong (no rok streams on the server, a bug), the step goes on: a guard never blocks a step.
    """
    try:
        await _guard(settings, stop)
    except Exception:
        log.exception("the guard failed: the step goes on without consistent snapshots (best effort)")
        if not settings.guard_ready_file.exists():
            _mark_ready(settings.guard_ready_file, "best-effort")
        await stop.wait()


async def _guard(settings: GuardSettings, stop: asyncio.Event) -> None:
    from rokcommon import bus
    from rokcommon.errors import TemporaryError
    from rokcommon.follow import an_hour_ago, commits
    from rokcommon.versions import VersionKey

    uid, step = settings.guard_workflow_uid, settings.guard_step_id
    ready = settings.guard_ready_file
    context = {"workflow_uid": uid, "step_id": step}
    log.info("guarding step %s of workflow %s", step, uid, extra=context)
    try:
        nc = await asyncio.wait_for(bus.connect(settings, name="rok-guard"), settings.guard_before_timeout or None)
    except (TemporaryError, TimeoutError) as error:
        log.warning(
            "cannot reach NATS (%s): the step runs without consistent snapshots (best effort)", error, extra=context
        )
        _mark_ready(ready, "best-effort")
        await stop.wait()
        return
    try:
        async with commits(nc.jetstream(), since=an_hour_ago()) as follower:
            before = asyncio.ensure_future(
                follower.wait(VersionKey.of_step(uid, step, 0, "before").of_node, settings.guard_before_timeout)
            )
            await _first(before, asyncio.ensure_future(stop.wait()))
            if before.done() and before.result() is not None:
                log.info("before-snapshot committed: the step starts", extra=context)
                _mark_ready(ready, "committed")
            elif not stop.is_set():
                log.warning(
                    "no before-snapshot committed within %.0fs: the step starts anyway (best effort)",
                    settings.guard_before_timeout,
                    extra=context,
                )
                _mark_ready(ready, "best-effort")
            await stop.wait()
            log.info("the step ended: waiting for its after-snapshot", extra=context)
            after = await follower.wait(VersionKey.of_step(uid, step, 0, "after").of_node, settings.guard_after_timeout)
            if after is not None:
                log.info("after-snapshot committed: the pod may end", extra=context)
            else:
                log.warning(
                    "no after-snapshot committed within %.0fs: the pod ends anyway (best effort)",
                    settings.guard_after_timeout,
                    extra=context,
                )
    finally:
        await nc.close()


def _mark_ready(ready: Path, how: str) -> None:
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.write_text(how + "\n")
