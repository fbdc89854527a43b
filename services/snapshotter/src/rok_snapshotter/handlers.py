"""The snapshotter's one consumer: this node's run and step events, translated into calls of the snapshot taker."""

from __future__ import annotations

from faststream.nats import NatsMessage
from rokcommon import streams, subjects
from rokcommon.events import RunStarted, StepFinished, StepStarted, model_for_subject
from rokcommon.service import Service

from rok_snapshotter.heartbeat import Heartbeat
from rok_snapshotter.settings import SnapshotterSettings
from rok_snapshotter.snapshots import SnapshotTaker


def consumer_spec(service: Service, settings: SnapshotterSettings) -> streams.ConsumerSpec:
    """``snapshotter-<node>``: the run-started, step-started and step-finished events routed to this node."""
    node = settings.node_name
    return service.consumer_spec(
        streams.PIPELINE,
        f"snapshotter-{subjects.node_token(node)}",
        subjects.node_filter(node),
        ack_wait=settings.ack_wait,
        description=f"snapshots the step volumes of node {node}",
    )


def subscribe(service: Service, taker: SnapshotTaker, settings: SnapshotterSettings) -> streams.ConsumerSpec:
    spec = consumer_spec(service, settings)

    @service.consumer(spec, max_workers=settings.snapshot_concurrency)
    async def snapshot_volumes(msg: NatsMessage) -> None:
        raw = msg.raw_message
        event = model_for_subject(raw.subject).decode(raw.data)
        assert isinstance(event, RunStarted | StepStarted | StepFinished), raw.subject  # the filter allows no other
        heartbeat = Heartbeat(msg.in_progress, settings.heartbeat_interval)
        await taker.handle(event, heartbeat, last_delivery=raw.metadata.num_delivered >= spec.max_deliver)

    return spec
