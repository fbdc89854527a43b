"""``python -m rok_registry``: migrates, serves HTTP and NATS, logs ready, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path

from nats.aio.client import Client
from rokcommon.credentials import web_token
from rokcommon.registry_client import RegistryClient
from roktesting.nats import NatsServer
from roktesting.ports import free_port
from roktesting.processes import service_process


def get_json(url: str, token: str) -> object:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


async def test_the_registry_process_logs_ready_answers_and_stops_cleanly_on_sigterm(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "ROK_NATS_URL": nats_server.url,
        "ROK_STATE_DIR": str(tmp_path / "state"),
        "ROK_REGISTRY_PORT": str(port),
        "ROK_LOG_FORMAT": "json",
    }
    env.pop("ROK_DATABASE_URL", None)
    async with service_process("rok_registry", env) as registry:
        await registry.read_until('"registry ready"')
        token = web_token(tmp_path / "state")  # the registry made the local user's token as it started
        assert (tmp_path / "state" / "web-token").stat().st_mode & 0o777 == 0o600
        url = f"http://127.0.0.1:{port}/api/v1/namespaces/local/buckets"
        assert await asyncio.to_thread(get_json, url, token) == {"items": [], "next": None, "prev": None, "total": 0}
        assert await RegistryClient(nc, "local", timeout=5).list_buckets() == []
        assert (tmp_path / "state" / "registry.db").is_file()
        code, log = await registry.terminate(20)
    assert code == 0, log
    assert "registry stopping" in log
    assert "Traceback" not in log
    ready = next(json.loads(line) for line in registry.lines if '"registry ready"' in line)
    assert ready["service"] == "registry" and ready["level"] == "info"
