"""The registry as it runs in a cluster: no store URL and no store credentials at all. What each step changed
still shows on its lineage page and in its API (recorded with the snapshots), and a full comparison — the web
page's and ``rok diff``'s — is answered over the bus by the restorer, which holds the store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from rokcommon.credentials import web_token
from roktesting.nats import NatsServer
from roktesting.s3 import S3Server

from .conftest import make_system
from .processes import ServiceProcess
from .system import NAMESPACE, PipelineRun, System

pytestmark = pytest.mark.slow

STORE_SETTINGS = ("ROK_REPOSITORY", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture
async def storeless(
    nats_server: NatsServer, s3_server: S3Server, postgres_dsn: str, tmp_path: Path
) -> AsyncIterator[System]:
    """The system with the store's URL and credentials given to the snapshotter and the restorer only."""
    system = make_system(tmp_path, nats_server, s3_server, "rok-storeless", postgres_dsn)
    env = {k: v for k, v in system.env.items() if k not in STORE_SETTINGS}
    env |= {"ROK_STATE_DIR": str(tmp_path / "state-registry"), "ROK_NAMESPACE": NAMESPACE}
    assert not any(k in os.environ for k in STORE_SETTINGS)  # nothing inherited either
    system.services["registry"] = ServiceProcess("registry", env, tmp_path)
    try:
        await system.start()
        yield system
    finally:
        await system.close()


def _get(url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def get(system: System, path: str) -> tuple[int, str]:
    token = web_token(system.root / "state-registry")  # the registry's state directory: its local user's token
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{system.env['ROK_REGISTRY_PORT']}{path}", token)


def rok_diff(system: System, a: str, b: str) -> dict[str, Any]:
    """``rok diff A B --json`` as a user runs it: with the bus's address and a namespace, and no store."""
    env = {k: v for k, v in os.environ.items() if k not in STORE_SETTINGS}
    env |= {"ROK_NATS_URL": system.nats.url, "ROK_NAMESPACE": NAMESPACE, "ROK_STATE_DIR": str(system.root / "cli")}
    rok = Path(sys.executable).parent / "rok"
    done = subprocess.run([rok, "diff", a, b, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def test_a_registry_without_a_store_shows_each_steps_changes_and_diffs_come_from_the_restorer(
    storeless: System, tmp_path: Path
) -> None:
    system = storeless
    ws, data = tmp_path / "volumes" / "workspace", tmp_path / "volumes" / "data"
    ws.mkdir(parents=True)
    data.mkdir()
    (ws / "notes.txt").write_text("first\n")
    (data / "points.csv").write_text("1,2\n")
    run = PipelineRun(system, {"workspace": ws, "data": data})
    await run.begin()

    def train() -> None:
        (ws / "model.json").write_text("{}\n")
        (ws / "notes.txt").write_text("first, then trained\n")

    train_step = await run.play_step("train", train)
    before, after = run.commits[("train", "before")], run.commits[("train", "after")]

    # the recorded summary, over the bus and over HTTP
    lineage = await system.lineage(after)
    (step,) = [s for s in lineage.steps if s.step_id == train_step.step_id]
    assert step.before is not None and step.after is not None
    before_ids = {m.volume: m.snapshot_id for m in step.before.members}
    workspace = next(m for m in step.after.members if m.volume == "workspace")
    assert workspace.changes is not None
    assert workspace.changes.parent == before_ids["workspace"]
    assert (workspace.changes.added, workspace.changes.changed, workspace.changes.removed) == (
        ("model.json",),
        ("notes.txt",),
        (),
    )
    bucket, file = lineage.file.bucket, lineage.file.name
    status, body = await get(system, f"/api/v1/namespaces/{NAMESPACE}/buckets/{bucket}/files/{file}/lineage")
    assert status == 200, body
    (api_step,) = [s for s in json.loads(body)["steps"] if s["step_id"] == train_step.step_id]
    api_members = {m["volume"]: m for m in api_step["after"]["members"]}
    assert api_members["workspace"]["changes"]["added"] == ["model.json"]
    assert api_members["data"]["changes"]["parent"] == before_ids["data"]
    assert api_members["data"]["changes"]["added_count"] == 0

    # the lineage page, rendered by the registry from what it recorded
    status, page = await get(system, f"/buckets/{bucket}/{file}/lineage")
    assert status == 200, page
    assert '<li class="added"><span>+</span> model.json</li>' in page
    assert '<li class="changed"><span>~</span> notes.txt</li>' in page
    assert 'class="note unchanged"' in page  # the data volume

    # the full comparison, computed by the restorer
    query = urllib.parse.urlencode({"a": before.url, "b": after.url})
    status, compare = await get(system, f"/compare?{query}")
    assert status == 200, compare
    assert '<li class="added"><span>+</span> model.json</li>' in compare
    assert "2 path(s) changed" in compare
    diff = await asyncio.to_thread(rok_diff, system, before.url, after.url)
    by_volume = {v["volume"]: v for v in diff["volumes"]}
    assert (by_volume["workspace"]["added"], by_volume["workspace"]["changed"]) == (["model.json"], ["notes.txt"])
    assert by_volume["data"]["unchanged"]
