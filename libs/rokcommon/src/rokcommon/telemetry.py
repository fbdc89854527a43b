"""OpenTelemetry, set up once per process: a tracer and a meter provider named for the service.

Exporters follow the environment: OTLP over HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; JSON lines in a
file when ``ROK_OTEL_FILE`` is set (one finished span per line, what the cross-process tests read); nothing
otherwise. The metric instruments every service exports are declared once in :data:`METRICS`, so dashboards,
alerts and their tests have one list to check against.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Literal["counter", "histogram", "up_down_counter"]
    unit: str
    description: str


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("rok.snapshot.bytes.scanned", "counter", "By", "Bytes of volume content looked at by snapshots"),
    MetricSpec("rok.snapshot.bytes.read", "counter", "By", "Bytes read from volumes (unchanged files are skipped)"),
    MetricSpec("rok.snapshot.bytes.new", "counter", "By", "Bytes of content never stored before"),
    MetricSpec("rok.snapshot.bytes.uploaded", "counter", "By", "Bytes written to the object store"),
    MetricSpec("rok.snapshot.duration", "histogram", "s", "Time to snapshot one volume"),
    MetricSpec("rok.snapshot.dedup.ratio", "histogram", "1", "Share of scanned bytes that were already stored"),
    MetricSpec("rok.snapshot.failures", "counter", "{snapshot}", "Volume snapshots that failed"),
    MetricSpec("rok.snapshot.completed", "counter", "{snapshot}", "Volume snapshots stored"),
    MetricSpec("rok.restore.duration", "histogram", "s", "Time to restore one request"),
    MetricSpec("rok.restore.bytes", "counter", "By", "Bytes restored"),
    MetricSpec("rok.restore.failures", "counter", "{restore}", "Restores that failed"),
    MetricSpec("rok.registry.versions.committed", "counter", "{version}", "Versions recorded whole by the registry"),
    MetricSpec("rok.registry.commit.latency", "histogram", "s", "From a step event to its version being recorded"),
    MetricSpec("rok.bus.dead_letters", "counter", "{message}", "Messages moved to the dead-letter stream"),
    MetricSpec("rok.watcher.events.published", "counter", "{event}", "Run and step events published"),
)


class JsonLinesSpanExporter(SpanExporter):
    """Append each finished span as one JSON object to a file (safe for several processes: O_APPEND lines)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            context = span.get_span_context()
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "service": span.resource.attributes.get("service.name"),
                        "trace_id": format(context.trace_id, "032x") if context else None,
                        "span_id": format(context.span_id, "016x") if context else None,
                        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
                        "kind": span.kind.name,
                        "start": span.start_time,
                        "end": span.end_time,
                        "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
                        "status": span.status.status_code.name,
                    }
                )
            )
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


_installed: Telemetry | None = None


def setup_telemetry(service: str, *, metric_readers: Sequence[MetricReader] = ()) -> Telemetry:
    """Install the process's tracer and meter providers (once; later calls return the same)."""
    global _installed
    if _installed is not None:
        return _installed
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", f"rok-{service}")})
    tracer_provider = TracerProvider(resource=resource)
    readers = list(metric_readers)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if path := os.environ.get("ROK_OTEL_FILE"):
        tracer_provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(path), schedule_delay_millis=200))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _installed = Telemetry(tracer_provider, meter_provider)
    return _installed


class Instruments:
    """The instruments of :data:`METRICS`, created on one meter: ``instruments["rok.snapshot.duration"]``."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._by_name: dict[str, metrics.Counter | metrics.Histogram | metrics.UpDownCounter] = {}
        for spec in METRICS:
            if spec.kind == "counter":
                self._by_name[spec.name] = meter.create_counter(spec.name, spec.unit, spec.description)
            elif spec.kind == "histogram":
                self._by_name[spec.name] = meter.create_histogram(spec.name, spec.unit, spec.description)
            else:
                self._by_name[spec.name] = meter.create_up_down_counter(spec.name, spec.unit, spec.description)

    def add(self, name: str, value: float, attributes: dict[str, str] | None = None) -> None:
        instrument = self._by_name[name]
        if isinstance(instrument, metrics.Histogram):
            instrument.record(value, attributes)
        else:
            instrument.add(value, attributes)


def instruments(scope: str = "rok") -> Instruments:
    return Instruments(metrics.get_meter(scope))
