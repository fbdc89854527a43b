"""The step guard's mutating admission webhook, served over HTTPS by aiohttp (``POST /mutate``)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from aiohttp import web

from rok_pipeline_watcher.guard.admission import GuardConfig, review

log = logging.getLogger(__name__)


def make_app(config: GuardConfig) -> web.Application:
    async def mutate(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not an AdmissionReview (JSON)"}, status=400)
        answer = review(body, config)
        if "patch" in answer["response"]:
            pod = (body.get("request") or {}).get("object") or {}
            meta = pod.get("metadata") or {}
            log.info(
                "guarding pod %s/%s",
                meta.get("namespace") or body["request"].get("namespace"),
                meta.get("name") or meta.get("generateName"),
            )
        return web.json_response(answer)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    return app


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def start(config: GuardConfig, host: str, port: int, cert: Path, key: Path) -> web.AppRunner:
    """Start serving; the caller keeps the runner and calls ``cleanup()`` to stop."""
    runner = web.AppRunner(make_app(config))
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls_context(cert, key)).start()
    log.info("step guard webhook listening on https://%s:%d/mutate", host, port)
    return runner
