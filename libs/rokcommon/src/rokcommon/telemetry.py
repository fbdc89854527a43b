"""OpenTelemetry, set up once per process: a tracer and a meter provider named for the service.

Exporters follow OpenTelemetry's standard variables: OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or the
signal's own ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``…_METRICS_ENDPOINT`` is set, over the protocol of
``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_PROTOCOL`` (``http/protobuf``, the default; ``grpc`` when its exporter
package is installed); ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER=none`` turn a signal off and
``OTEL_SDK_DISABLED=true`` all of it. The resource is ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``
(default ``rok-<service>``). JSON lines go to a file when ``ROK_OTEL_FILE`` is set (one finished span per
line, what the cross-process tests read). The metric instruments every service exports are declared once in
:data:`METRICS`, so dashboards, alerts and their tests have one list to check against.

Spans about a run, a step or a restore carry ``rok.run_id``, ``rok.step`` and ``rok.namespace``
(:func:`event_attributes`), so that a trace backend finds a run's traces by its id.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from rokcommon.errors import PermanentError


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


class TelemetrySettingsError(PermanentError):
    """An ``OTEL_*`` variable asks for what this installation cannot do (a protocol whose exporter is absent)."""


def setup_telemetry(service: str, *, metric_readers: Sequence[MetricReader] = ()) -> Telemetry:
    """Install the process's tracer and meter providers (once; later calls return the same)."""
    global _installed
    if _installed is not None:
        return _installed
    tracer_provider = TracerProvider(resource=resource(service))
    for processor in span_processors():
        tracer_provider.add_span_processor(processor)
    readers = [*metric_readers, *exporting_metric_readers()]
    meter_provider = MeterProvider(resource=tracer_provider.resource, metric_readers=readers)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _installed = Telemetry(tracer_provider, meter_provider)
    return _installed


def span_processors() -> list[BatchSpanProcessor]:
    """Where finished spans go, as the environment says (none when ``OTEL_SDK_DISABLED=true``)."""
    if _sdk_disabled():
        return []
    processors = []
    if _wants_otlp("traces"):
        processors.append(BatchSpanProcessor(_otlp_exporter("traces")))
    if path := os.environ.get("ROK_OTEL_FILE"):
        processors.append(BatchSpanProcessor(JsonLinesSpanExporter(path), schedule_delay_millis=200))
    return processors


def exporting_metric_readers() -> list[MetricReader]:
    """The readers that send metrics, as the environment says (none when ``OTEL_SDK_DISABLED=true``)."""
    if _sdk_disabled() or not _wants_otlp("metrics"):
        return []
    return [PeriodicExportingMetricReader(_otlp_exporter("metrics"))]


def resource(service: str) -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` (read by the SDK), named ``rok-<service>`` if neither
    names the service."""
    detected = Resource.create()
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return detected if named else detected.merge(Resource({"service.name": f"rok-{service}"}))


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _signal_env(name: str, signal: str) -> str:
    """``OTEL_EXPORTER_OTLP_<SIGNAL>_<NAME>``, else ``OTEL_EXPORTER_OTLP_<NAME>`` (the specification's order)."""
    return (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}")
        or ""
    ).strip()


def _wants_otlp(signal: str) -> bool:
    exporter = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").strip().lower()
    if exporter == "none":
        return False
    if exporter != "otlp":
        raise TelemetrySettingsError(
            f"OTEL_{signal.upper()}_EXPORTER={exporter!r} is not supported: rok exports over OTLP (otlp) or not at all "
            "(none)"
        )
    return bool(_signal_env("ENDPOINT", signal))


# protocol → module of the OTLP exporters (the http/protobuf one is rokcommon's dependency; grpc is optional)
_EXPORTERS = {
    "http/protobuf": ("opentelemetry.exporter.otlp.proto.http", "opentelemetry-exporter-otlp-proto-http"),
    "grpc": ("opentelemetry.exporter.otlp.proto.grpc", "opentelemetry-exporter-otlp-proto-grpc"),
}


def _otlp_exporter(signal: Literal["traces", "metrics"]) -> Any:
    """The OTLP exporter of ``signal`` for the configured protocol; it reads its endpoint, headers and timeout
    from the same variables."""
    import importlib

    protocol = _signal_env("PROTOCOL", signal) or "http/protobuf"
    variable = (
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
        if os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        else "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    if protocol not in _EXPORTERS:
        raise TelemetrySettingsError(
            f"{variable}={protocol!r} is not supported: use http/protobuf (the collector's port 4318) or grpc (4317)"
        )
    package, distribution = _EXPORTERS[protocol]
    module = "trace_exporter" if signal == "traces" else "metric_exporter"
    try:
        exporters = importlib.import_module(f"{package}.{module}")
    except ImportError:
        raise TelemetrySettingsError(
            f"{variable}={protocol!r} needs the {distribution} package, which is not installed; "
            "install it or use http/protobuf (the collector's port 4318)"
        ) from None
    return exporters.OTLPSpanExporter() if signal == "traces" else exporters.OTLPMetricExporter()


def event_attributes(event: object) -> dict[str, str]:
    """``rok.run_id``, ``rok.step`` and ``rok.namespace`` of an event (those it knows), for its spans."""
    fields = getattr(event, "__dict__", {})  # a model's fields: no costly AttributeError for those it lacks
    step = fields.get("step")
    run = fields.get("run") or getattr(step, "run", None)
    found: dict[str, str] = {}
    if run is not None:
        found["rok.run_id"] = run.run_id
        found["rok.namespace"] = run.namespace
    if step is not None:
        found["rok.step"] = step.name
    if isinstance(namespace := fields.get("namespace"), str):
        found["rok.namespace"] = namespace
    if isinstance(request_id := fields.get("request_id"), str):
        found["rok.restore.request_id"] = request_id
    return found


def annotate_current_span(event: object) -> None:
    """Put the event's rok attributes on the current span (a consumer's, a handler's)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(event_attributes(event))


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
