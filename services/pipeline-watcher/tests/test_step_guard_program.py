"""``rok guard run`` as a local process against a real nats-server: it holds the step for its snapshots."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from rokcommon.bus import publish
from rokcommon.events import RunRef, StepRef, VersionCommitted

ROK = str(Path(sys.executable).parent / "rok")
RUN = RunRef(namespace="kubeflow-user-example-com", run_id="55357e95", workflow_uid="d6c0e1a4-5b7e-4c61")
STEP = StepRef(run=RUN, step_id="ml-pipeline-8xfss-2546416539", name="train")
OTHER = StepRef(run=RUN, step_id="ml-pipeline-8xfss-1111111111", name="make-data")


def committed(step, phase):
    return VersionCommitted.make(run=RUN, step=step, phase=phase, url="rok://x")


class Guard:
    def __init__(self, process, ready_file, env):
        self.process, self.ready_file, self.env = process, ready_file, env
        self.lines: list[str] = []

    async def line_with(self, text):
        while True:
            raw = await asyncio.wait_for(self.process.stderr.readline(), 20)
            assert raw, f"the guard exited before saying {text!r}: {self.lines}"
            self.lines.append(raw.decode())
            if text in self.lines[-1]:
                return self.lines[-1]

    async def probe(self):
        probe = await asyncio.create_subprocess_exec(ROK, "guard", "probe", env=self.env)
        return await probe.wait()


@pytest.fixture
async def start_guard(nats_server, tmp_path):
    started = []

    async def start(before=60.0, after=60.0):
        ready = tmp_path / "ready"
        env = {
            **os.environ,
            "ROK_NATS_URL": nats_server.url,
            "ROK_GUARD_WORKFLOW_UID": RUN.workflow_uid,
            "ROK_GUARD_STEP_ID": STEP.step_id,
            "ROK_GUARD_BEFORE_TIMEOUT": str(before),
            "ROK_GUARD_AFTER_TIMEOUT": str(after),
            "ROK_GUARD_READY_FILE": str(ready),
            "ROK_LOG_FORMAT": "text",
        }
        process = await asyncio.create_subprocess_exec(ROK, "guard", "run", env=env, stderr=asyncio.subprocess.PIPE)
        started.append(process)
        return Guard(process, ready, env)

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_guard_holds_the_step_until_its_before_snapshot_and_the_pod_end_until_its_after_snapshot(
    js, start_guard
):
    guard = await start_guard()
    await guard.line_with("guarding step")
    assert await guard.probe() == 1

    await publish(js, committed(OTHER, "before"))
    await publish(js, committed(STEP, "before"))
    await guard.line_with("before-snapshot committed")
    assert await guard.probe() == 0
    assert guard.ready_file.read_text().strip() == "committed"

    guard.process.send_signal(signal.SIGTERM)
    await guard.line_with("waiting for its after-snapshot")
    assert guard.process.returncode is None

    await publish(js, committed(OTHER, "after"))
    await publish(js, committed(STEP, "after"))
    await guard.line_with("after-snapshot committed")
    assert await asyncio.wait_for(guard.process.wait(), 20) == 0
    assert not any("best effort" in line for line in guard.lines)


async def test_a_before_snapshot_committed_before_the_guard_started_lets_the_step_start(js, start_guard):
    await publish(js, committed(STEP, "before"))

    guard = await start_guard()

    await guard.line_with("before-snapshot committed")
    assert await guard.probe() == 0


async def test_without_commits_the_guard_lets_the_step_go_on_after_its_bounded_waits_best_effort(js, start_guard):
    guard = await start_guard(before=0.5, after=0.5)

    await guard.line_with("the step starts anyway (best effort)")
    assert await guard.probe() == 0
    assert guard.ready_file.read_text().strip() == "best-effort"
    guard.process.send_signal(signal.SIGTERM)
    await guard.line_with("the pod ends anyway (best effort)")
    assert await asyncio.wait_for(guard.process.wait(), 20) == 0


async def test_a_bus_without_rok_streams_does_not_block_the_step(nats_server, start_guard):
    guard = await start_guard()  # a bare nats-server: no ROK_VERSIONS stream to follow

    await guard.line_with("the step goes on without consistent snapshots (best effort)")
    assert await guard.probe() == 0
    guard.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(guard.process.wait(), 20) == 0
