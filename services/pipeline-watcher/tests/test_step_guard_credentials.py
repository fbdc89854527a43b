"""The step guard on a bus with users: the webhook hands it the guard's login, and with it the real guard
follows commits while the server refuses it everything else."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from rok_pipeline_watcher.guard.admission import GuardConfig, guard_container
from rokcommon import permissions, streams
from rokcommon.bus import publish
from rokcommon.events import RunRef, StepRef, VersionCommitted
from roktesting.nats import UsersNats

ROK = str(Path(sys.executable).parent / "rok")
RUN = RunRef(namespace="kubeflow-user-example-com", run_id="55357e95", workflow_uid="d6c0e1a4-5b7e-4c61")
STEP = StepRef(run=RUN, step_id="ml-pipeline-8xfss-2546416539", name="train")
POD = {"metadata": {"name": "p", "ownerReferences": [{"kind": "Workflow", "uid": RUN.workflow_uid}]}, "spec": {}}


def test_the_injected_guard_connects_as_the_guard_user() -> None:
    config = GuardConfig(
        image="rok/guard", nats_url="nats://rok-nats.rok.svc:4222", nats_user="guard", nats_password="pw"
    )
    env = {e["name"]: e["value"] for e in guard_container(POD, config)["env"]}
    assert env["ROK_NATS_USER"] == "guard"
    assert env["ROK_NATS_PASSWORD"] == "pw"
    without = {e["name"] for e in guard_container(POD, GuardConfig(image="rok/guard", nats_url="nats://x"))["env"]}
    assert "ROK_NATS_USER" not in without and "ROK_NATS_PASSWORD" not in without


async def _line_with(process: asyncio.subprocess.Process, text: str, lines: list[str]) -> str:
    assert process.stderr is not None
    while True:
        raw = await asyncio.wait_for(process.stderr.readline(), 20)
        assert raw, f"the guard exited before saying {text!r}: {lines}"
        lines.append(raw.decode())
        if text in lines[-1]:
            return lines[-1]


async def test_the_guard_with_its_credentials_holds_the_step_until_the_registry_commits(
    nats_with_users: UsersNats, tmp_path: Path
) -> None:
    registry = await nats_with_users.connect(permissions.REGISTRY)
    js = registry.jetstream()
    await streams.ensure_streams(js)
    ready = tmp_path / "ready"
    env = {
        **os.environ,
        "ROK_NATS_URL": nats_with_users.url,
        "ROK_NATS_USER": permissions.GUARD,
        "ROK_NATS_PASSWORD": nats_with_users.passwords[permissions.GUARD],
        "ROK_GUARD_WORKFLOW_UID": RUN.workflow_uid,
        "ROK_GUARD_STEP_ID": STEP.step_id,
        "ROK_GUARD_READY_FILE": str(ready),
        "ROK_GUARD_BEFORE_TIMEOUT": "60",
        "ROK_GUARD_AFTER_TIMEOUT": "60",
        "ROK_LOG_FORMAT": "text",
    }
    process = await asyncio.create_subprocess_exec(ROK, "guard", "run", env=env, stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []
    try:
        await _line_with(process, "guarding step", lines)
        for phase in ("before", "after"):
            event = VersionCommitted.make(run=RUN, step=STEP, phase=phase, url="rok://x")
            await publish(js, event)
            await _line_with(process, f"{phase}-snapshot committed", lines)
            if phase == "before":
                process.send_signal(signal.SIGTERM)  # the step ended
        assert await asyncio.wait_for(process.wait(), 20) == 0
        assert ready.read_text().strip() == "committed"  # not "best-effort": it saw the before-snapshot
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await registry.close()
    assert not any("best effort" in line or "violation" in line.lower() for line in lines), lines
