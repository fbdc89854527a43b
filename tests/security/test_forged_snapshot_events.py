"""Forged run events do not make the snapshotter read what is not a volume.

The attacker can publish run events on the bus (a holder of the local runner's NATS credentials, say) and forges a
``RunStarted`` whose volume climbs out of the notebook's directory (``…/ws/../../../secret-outside``), hoping to
restore the secret from the version it would make. The snapshotter and the registry run as their own processes
on a real nats-server, as ``rok up`` runs them: the forged event is dead-lettered with the reason, nothing is
snapshotted or announced for it and no version is committed, while a genuine run published beside it is.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from nats.js import JetStreamContext
from rokcommon import bus, streams
from rokcommon.events import RunRef, RunStarted, VersionCommitted, VolumeRef, model_for_subject
from rokcommon.versions import VersionKey
from roktesting.nats import NatsServer
from roktesting.ports import free_port

NODE = "node-1"


@contextmanager
def service(name: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m rok_<name>`` with ``env``, its JSON log in ``log``; terminated at the end."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", f"rok_{name}"], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def ready(name: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Wait for the service's ``<name> ready`` log line."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("message") == f"{name} ready":
                return
        assert process.poll() is None, f"{name} exited: {log.read_text()[-3000:]}"
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never became ready: {log.read_text()[-3000:]}")


@asynccontextmanager
async def local_services(nats_server: NatsServer, root: Path, roots: Path) -> AsyncIterator[None]:
    """The snapshotter and the registry of one machine, reading volumes only under ``roots``."""
    common = {
        "ROK_NATS_URL": nats_server.url,
        "ROK_NODE_NAME": NODE,
        "ROK_VOLUME_ROOTS": str(roots),
        "ROK_REPOSITORY": (root / "repo").as_uri(),
        "ROK_REGISTRY_PORT": str(free_port()),
        "ROK_LOG_FORMAT": "json",
        "ROK_RETRY_DELAY": "0.2",
    }
    with (
        service("snapshotter", common | {"ROK_STATE_DIR": str(root / "snapshotter")}, root / "snapshotter.log") as s,
        service("registry", common | {"ROK_STATE_DIR": str(root / "registry")}, root / "registry.log") as r,
    ):
        await ready("snapshotter", s, root / "snapshotter.log")
        await ready("registry", r, root / "registry.log")
        yield


def run_started(workflow_uid: str, path: str) -> RunStarted:
    return RunStarted.make(
        run=RunRef(namespace="local", run_id=workflow_uid, workflow_uid=workflow_uid),
        run_name=workflow_uid,
        pipeline_name="p",
        node=NODE,
        volumes=(VolumeRef(name="workspace", role="workspace", path=path),),
        started_at=datetime.now(UTC),
    )


async def stored(js: JetStreamContext, stream: str) -> list[object]:
    """Every event stored in ``stream`` so far, decoded."""
    info = await js.stream_info(stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        msg = await js.get_msg(stream, seq)
        found.append(model_for_subject(msg.subject).decode(msg.data or b""))
    return found


async def test_a_forged_run_start_climbing_out_of_the_notebook_is_dead_lettered_and_gets_no_version(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    workspace = home / "notebook" / "ws"
    workspace.mkdir(parents=True)
    (workspace / "train.py").write_text("print('train')\n")
    secret = tmp_path / "secret-outside"
    secret.mkdir()
    (secret / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    forged = run_started("wf-forged", f"{workspace}/../../../secret-outside")
    genuine = run_started("wf-genuine", str(workspace))

    async with local_services(nats_server, tmp_path, home):
        committed = await js.subscribe("rok.version.committed.v1", stream=streams.VERSIONS.name, ordered_consumer=True)
        await bus.publish(js, forged)
        await bus.publish(js, genuine)
        letters = await js.pull_subscribe("rok.dlq.>", stream=streams.DLQ.name)
        [letter] = await letters.fetch(1, timeout=30)
        first_commit = await committed.next_msg(timeout=30)

    commit = VersionCommitted.decode(first_commit.data)
    assert json.loads(letter.data)["event_id"] == forged.event_id
    reason = letter.headers[bus.DEAD_REASON]
    assert "secret-outside' is not a plain absolute path (it climbs with '..'); refusing to read it" in reason
    assert commit.key == VersionKey.initial("wf-genuine")
    snapshots = await stored(js, streams.SNAPSHOTS.name)
    assert [getattr(e, "run", None) for e in snapshots] == [genuine.run]  # nothing, not even a failure, for it
    versions = await stored(js, streams.VERSIONS.name)
    assert [e.key for e in versions if isinstance(e, VersionCommitted)] == [VersionKey.initial("wf-genuine")]
