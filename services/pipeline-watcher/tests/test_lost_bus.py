"""A watcher whose NATS connection the server closes for good (its user no longer allowed after a configuration
reload: nats-server sends "Authorization Violation", and nats-py gives up) stops with an error, so that its
process exits non-zero and is restarted, instead of watching on with no bus."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from rok_pipeline_watcher.main import serve
from rok_pipeline_watcher.settings import WatcherSettings
from rokcommon import bus
from roktesting.nats import NatsServer


async def test_a_watcher_whose_connection_is_closed_for_good_stops_with_an_error(tmp_path: Path) -> None:
    config = tmp_path / "nats.conf"
    config.write_text("# no users yet\n")
    server = NatsServer(tmp_path / "store", config=config)
    server.start()
    try:
        stop, ready = asyncio.Event(), asyncio.Event()
        serving = asyncio.create_task(serve(WatcherSettings(nats_url=server.url), stop, ready=ready))
        await asyncio.wait_for(ready.wait(), 20)
        config.write_text('authorization { users = [{user: "someone", password: "not-the-watcher"}] }\n')
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)  # reload: the watcher's login is no longer valid
        with pytest.raises(bus.BusConnectionLost, match="closed for good"):
            await asyncio.wait_for(serving, 30)
        assert not stop.is_set()  # nobody asked it to stop: the bus did
    finally:
        server.stop()
