"""The snapshotter's consumers: this node's run and step events, translated into calls of the snapshot taker.

``subjects.node_filter`` (``rok.*.*.v1.<node>``) is not a subset of the pipeline stream's subjects, and
nats-server 2.9 has no consumers with several filters, so the node's events come through two durable consumers
sharing one handler: ``snapshotter-<node>`` for ``rok.step.*.v1.<node>`` (step started and finished) and
``snapshotter-<node>-runs`` for ``rok.run.started.v1.<node>``. Both are bounded by the same snapshot slots.

The consumers have no ``backoff`` list: with one, nats-server 2.9 redelivers a message nak'ed a second time
only after the backoff delay (at least ``ack_wait``), ignoring the nak's own delay. Without one, a transient
failure is retried after the failure policy's growing delay, and a snapshotter that died is replaced after
``ack_wait`` (progress reports keep a live one's messages from being redelivered).

``max_ack_pending`` is the node's snapshot concurrency: the server hands out no more events than are being
worked on, so none waits unacknowledged in the client's buffer (without progress reports) behind a long
snapshot, to be delivered again and again until it is dead-lettered although it was never tried.
"""

from __future__ import annotations

from faststream.nats import NatsMessage
from rokcommon import streams, subjects
from rokcommon.keepalive import Heartbeat
from rokcommon.service import Service

from rok_snapshotter.plan import NodeEvent
from rok_snapshotter.settings import SnapshotterSettings
from rok_snapshotter.snapshots import SnapshotTaker


def consumer_specs(service: Service, settings: SnapshotterSettings) -> tuple[streams.ConsumerSpec, ...]:
    node = settings.node_name
    token = subjects.node_token(node)
    steps = service.consumer_spec(
        streams.PIPELINE,
        f"snapshotter-{token}",
        f"rok.step.*.v1.{token}",
        ack_wait=settings.ack_wait,
        backoff=(),
        max_ack_pending=settings.snapshot_concurrency,
        description=f"snapshots the step volumes of node {node} before and after each step",
    )
    runs = service.consumer_spec(
        streams.PIPELINE,
        f"snapshotter-{token}-runs",
        subjects.for_node(subjects.RUN_STARTED, node),
        ack_wait=settings.ack_wait,
        backoff=(),
        max_ack_pending=settings.snapshot_concurrency,
        description=f"snapshots the notebook volumes on node {node} when a run starts",
    )
    return steps, runs


def subscribe(
    service: Service, taker: SnapshotTaker, settings: SnapshotterSettings
) -> tuple[streams.ConsumerSpec, ...]:
    specs = consumer_specs(service, settings)
    for spec in specs:
        _subscribe(service, taker, settings, spec)
    return specs


def _subscribe(
    service: Service, taker: SnapshotTaker, settings: SnapshotterSettings, spec: streams.ConsumerSpec
) -> None:
    @service.consumer(spec, max_workers=settings.snapshot_concurrency, batch_size=1)
    async def snapshot_volumes(event: NodeEvent, msg: NatsMessage) -> None:
        heartbeat = Heartbeat(msg.in_progress, settings.heartbeat_interval)
        await taker.handle(event, heartbeat, last_delivery=msg.raw_message.metadata.num_delivered >= spec.max_deliver)
