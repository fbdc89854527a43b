"""Traces and metrics: the store's work shows inside the consumer's span, and every snapshot is counted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nats.js import JetStreamContext
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from rok_snapshotter.main import build
from rok_snapshotter.settings import SnapshotterSettings
from rokcommon import bus
from rokcommon.events import SnapshotCompleted, VolumeRef
from rokcommon.telemetry import Instruments
from roktesting.nats import running
from snapshotter_helpers import settled, snapshot_events, started, tree

DURABLE = "snapshotter-node-1_example_internal"


async def test_the_store_operations_are_children_of_the_consumer_span_in_the_publishers_trace(
    settings_for: Callable[..., SnapshotterSettings], js: JetStreamContext, volumes: tuple[VolumeRef, ...]
) -> None:
    service = build(settings_for())
    exporter = InMemorySpanExporter()
    service.telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = service.telemetry.tracer_provider.get_tracer("test")
    try:
        async with running(service):
            with tracer.start_as_current_span("watcher saw a step start") as root:
                await bus.publish(js, started(volumes[1:]))
            [done] = await snapshot_events(js, 1)
            await settled(js, DURABLE)
        spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == root.get_span_context().trace_id]
    finally:
        exporter.shutdown()
    assert isinstance(done, SnapshotCompleted)
    names = {s.name for s in spans}
    [consumer] = [s for s in spans if s.kind is SpanKind.CONSUMER and "rok.step.started.v1" in s.name]
    [snapshot] = [s for s in spans if s.name == "rok.store.snapshot"]
    assert snapshot.parent is not None and snapshot.parent.span_id == consumer.context.span_id
    assert snapshot.attributes and snapshot.attributes["rok.snapshot.id"] == done.snapshot_id
    assert {"rok.store.pack.upload", "rok.store.trees", "rok.store.snapshot_record.write"} <= names
    [announce] = [s for s in spans if s.name == "rok.snapshot.completed.v1 publish"]
    assert announce.parent is not None and announce.parent.span_id == consumer.context.span_id


async def test_every_snapshot_records_its_bytes_duration_and_de_duplication(
    settings_for: Callable[..., SnapshotterSettings], js: JetStreamContext, volumes: tuple[VolumeRef, ...]
) -> None:
    reader = InMemoryMetricReader()
    instruments = Instruments(MeterProvider(metric_readers=[reader]).get_meter("test"))
    async with running(build(settings_for(), instruments=instruments)):
        await bus.publish(js, started(volumes, step_id="first"))
        await snapshot_events(js, 2)
        await bus.publish(js, started(volumes, step_id="second"))  # nothing changed: all of it is known
        await snapshot_events(js, 4)
    points = {
        metric.name: metric.data.data_points
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    size = sum(len(b) for v in volumes for b in tree(Path(v.path or "")).values())
    assert sum(p.value for p in points["rok.snapshot.bytes.scanned"]) == 2 * size
    assert sum(p.value for p in points["rok.snapshot.bytes.new"]) == size
    assert sum(p.value for p in points["rok.snapshot.completed"]) == 4
    assert sum(p.count for p in points["rok.snapshot.duration"]) == 4
    [ratio] = points["rok.snapshot.dedup.ratio"]
    assert (ratio.count, ratio.min, ratio.max) == (4, 0.0, 1.0)
    assert "rok.snapshot.failures" not in points
