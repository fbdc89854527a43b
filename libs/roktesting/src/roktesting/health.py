"""Probing a service's health in a test: ask its checks, or its HTTP endpoints, until they say what is awaited."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from rokcommon.health import Health


async def until_ready(health: Health, ready: bool, check: str | None = None, timeout: float = 15.0) -> dict[str, str]:
    """Probe until readiness is ``ready`` (or, with ``check``, until that one check is); the last report's checks."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        report = await health.ready()
        ok = report.ok if check is None else report.checks.get(check) == "ok"
        if ok == ready or asyncio.get_running_loop().time() > deadline:
            return report.checks
        await asyncio.sleep(0.2)


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    """GET ``url``: its status and JSON body (an error status too, as the probes read it)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
