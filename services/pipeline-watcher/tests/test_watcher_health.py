"""The watcher's /livez and /readyz: ready while NATS and the Kubernetes API answer; failing naming whichever
stopped."""

from __future__ import annotations

import asyncio

from rok_pipeline_watcher.main import serve
from rok_pipeline_watcher.settings import WatcherSettings
from roktesting.health import get_json
from roktesting.kubernetes import FakeKube
from roktesting.nats import NatsServer
from roktesting.ports import free_port


async def until_status(url: str, status: int, timeout: float = 15.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got, body = await asyncio.to_thread(get_json, url)
        if got == status or asyncio.get_running_loop().time() > deadline:
            assert got == status, body
            return body
        await asyncio.sleep(0.2)


async def test_readiness_names_the_kubernetes_api_then_nats_as_each_stops(nats_server: NatsServer) -> None:
    kube = FakeKube().start()
    port = free_port()
    settings = WatcherSettings(
        nats_url=nats_server.url,
        kfp_api_url="http://127.0.0.1:9",
        kfp_api_timeout=0.5,
        health_port=port,
        retry_delay=0.2,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, api_client=kube.api_client, ready=ready))
    readyz, livez = f"http://127.0.0.1:{port}/readyz", f"http://127.0.0.1:{port}/livez"
    try:
        await asyncio.wait_for(ready.wait(), 20)
        body = await until_status(readyz, 200)
        assert body["checks"] == {"nats": "ok", "nats-open": "ok", "jetstream": "ok", "kubernetes": "ok"}

        kube.stop()
        body = await until_status(readyz, 503)
        assert body["failing"] == ["kubernetes"]
        assert body["checks"]["kubernetes"].startswith(f"the Kubernetes API at {kube.url} does not answer")
        assert (await asyncio.to_thread(get_json, livez))[0] == 200

        nats_server.stop()
        body = await until_status(readyz, 503)
        for _ in range(50):
            if "nats" in body["failing"]:
                break
            await asyncio.sleep(0.2)
            body = (await asyncio.to_thread(get_json, readyz))[1]
        assert body["checks"]["nats"] == "NATS connection reconnecting"
        assert (await asyncio.to_thread(get_json, livez))[0] == 200
        nats_server.start()
        for _ in range(50):
            if body["checks"]["nats"] == "ok":
                break
            await asyncio.sleep(0.2)
            body = (await asyncio.to_thread(get_json, readyz))[1]
        assert body["failing"] == ["kubernetes"]  # NATS is back; the API server is still gone
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
