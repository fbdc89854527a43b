"""``python -m rok_restorer``: connects, binds its durable consumer, logs ready, restores, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from nats.js import JetStreamContext
from restorer_testkit import FakeRegistry, Outcomes, Stored, ask, request, tree
from rok_restorer.handlers import DURABLE
from rokcommon import streams
from rokcommon.events import RestoreCompleted
from rokcommon.testing.nats import NatsServer
from rokcommon.testing.processes import read_until


async def test_the_restorer_process_logs_ready_restores_and_stops_cleanly_on_sigterm(
    nats_server: NatsServer,
    js: JetStreamContext,
    stored: Stored,
    registry: FakeRegistry,
    outcomes: Outcomes,
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "ROK_NATS_URL": nats_server.url,
        "ROK_STATE_DIR": str(tmp_path / "state"),
        "ROK_LOG_FORMAT": "json",
    }
    env.pop("ROK_OTEL_FILE", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rok_restorer", env=env, stderr=asyncio.subprocess.PIPE
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        await read_until(process.stderr, '"restorer ready"', lines, what="the restorer")
        consumer = await js.consumer_info(streams.RESTORES.name, DURABLE)
        assert consumer.config.filter_subject == "rok.restore.requested.v1"
        await ask(js, request("r-process", tmp_path / "t"))
        outcome = await outcomes.wait("r-process", timeout=30)
        assert isinstance(outcome, RestoreCompleted), outcome
        process.send_signal(signal.SIGTERM)
        remaining = await asyncio.wait_for(process.stderr.read(), 30)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = "".join(lines) + remaining.decode()
    assert code == 0, log
    assert "restorer stopping" in log
    assert "Traceback" not in log
    assert tree(tmp_path / "t" / "workspace") == tree(stored.volumes["workspace"])
    ready = next(json.loads(line) for line in lines if '"restorer ready"' in line)
    assert ready["service"] == "restorer" and ready["level"] == "info"
