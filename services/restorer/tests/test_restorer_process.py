"""``python -m rok_restorer``: connects, binds its durable consumer, logs ready, restores, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
from pathlib import Path

from nats.js import JetStreamContext
from restorer_testkit import FakeRegistry, Outcomes, Stored, ask, request, tree
from rok_restorer.handlers import DURABLE
from rokcommon import streams
from rokcommon.events import RestoreCompleted
from roktesting.nats import NatsServer
from roktesting.processes import service_process


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
    async with service_process("rok_restorer", env) as restorer:
        await restorer.read_until('"restorer ready"')
        consumer = await js.consumer_info(streams.RESTORES.name, DURABLE)
        assert consumer.config.filter_subject == "rok.restore.requested.v1"
        await ask(js, request("r-process", tmp_path / "t"))
        outcome = await outcomes.wait("r-process", timeout=30)
        assert isinstance(outcome, RestoreCompleted), outcome
        code, log = await restorer.terminate(30)
    assert code == 0, log
    assert "restorer stopping" in log
    assert "Traceback" not in log
    assert tree(tmp_path / "t" / "workspace") == tree(stored.volumes["workspace"])
    ready = next(json.loads(line) for line in restorer.lines if '"restorer ready"' in line)
    assert ready["service"] == "restorer" and ready["level"] == "info"
