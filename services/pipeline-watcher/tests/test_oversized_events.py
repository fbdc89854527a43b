"""An event too large for the bus (a run whose name alone is over the server's 64 KiB max_payload) is refused
by its publish, skipped by the Kubernetes source instead of retried for ever, and the connection stays up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import nats
from kubernetes import client
from rok_pipeline_watcher.kube_source import KubeSource
from rokcommon import bus, streams
from rokcommon.events import Event, RunRef, RunStarted, VolumeRef
from roktesting.nats import SMALL_MAX_PAYLOAD, NatsServer


def started(name: str, uid: str) -> RunStarted:
    return RunStarted.make(
        run=RunRef(namespace="team-a", run_id=uid, workflow_uid=uid),
        run_name=name,
        pipeline_name="p",
        node="node-1",
        volumes=(VolumeRef(name="workspace", role="workspace", path="/ws"),),
        started_at=datetime.now(UTC),
    )


async def test_an_event_too_large_for_the_bus_is_skipped_and_the_next_one_published(
    small_payload_nats: NatsServer,
) -> None:
    nc = await nats.connect(small_payload_nats.url)
    js = nc.jetstream()
    await streams.ensure_streams(js)
    attempts: list[str] = []

    async def publish(event: Event) -> None:
        attempts.append(event.event_id)
        await bus.publish(js, event)

    source = KubeSource(client.ApiClient(), publish, retry_delay=0.01)
    try:
        huge, small = started("x" * SMALL_MAX_PAYLOAD, "wf-huge"), started("nightly", "wf-small")
        await asyncio.wait_for(source._publish(huge), 10)
        await asyncio.wait_for(source._publish(small), 10)
        info = await js.stream_info(streams.PIPELINE.name)
        assert nc.is_connected
    finally:
        await nc.close()
    assert attempts == [huge.event_id, small.event_id]  # tried once, not again and again
    assert info.state.messages == 1
