"""OpenTelemetry's standard variables decide where spans and metrics go, what the resource says, and a protocol
this installation cannot speak is a clear error."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from rokcommon.telemetry import (
    JsonLinesSpanExporter,
    TelemetrySettingsError,
    exporting_metric_readers,
    resource,
    span_processors,
)

VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "ROK_OTEL_FILE",
)


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def exporters() -> list[object]:
    return [p.span_exporter for p in span_processors()]


def test_nothing_is_exported_without_an_endpoint() -> None:
    assert exporters() == []
    assert exporting_metric_readers() == []


def test_the_traces_endpoint_alone_exports_spans_there_and_no_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    (exporter,) = exporters()
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == "http://collector:4318/v1/traces"
    assert exporting_metric_readers() == []


def readers() -> list[Any]:
    """The readers the environment asks for, stopped at once: each starts a thread that would otherwise collect
    every minute for the rest of the test run, warning that no provider holds it (into later tests' output)."""
    found = exporting_metric_readers()
    for reader in found:
        reader.shutdown()
    return found


def test_the_shared_endpoint_exports_both_signals_each_to_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    (exporter,) = exporters()
    assert exporter._endpoint == "http://collector:4318/v1/traces"
    (reader,) = readers()
    assert isinstance(reader._exporter, OTLPMetricExporter)
    assert reader._exporter._endpoint == "http://collector:4318/v1/metrics"


def test_none_turns_a_signal_off_and_sdk_disabled_everything(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert exporters() == []
    assert len(readers()) == 1
    monkeypatch.setenv("ROK_OTEL_FILE", str(tmp_path / "spans.jsonl"))
    assert [type(e) for e in exporters()] == [JsonLinesSpanExporter]
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert exporters() == []
    assert exporting_metric_readers() == []


@pytest.mark.parametrize(
    ("variable", "protocol", "message"),
    [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "grpc",
            "OTEL_EXPORTER_OTLP_PROTOCOL='grpc' needs the opentelemetry-exporter-otlp-proto-grpc package, which is "
            "not installed; install it or use http/protobuf (the collector's port 4318)",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "http/json",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json' is not supported: use http/protobuf (the collector's port "
            "4318) or grpc (4317)",
        ),
    ],
)
def test_a_protocol_without_its_exporter_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, protocol: str, message: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv(variable, protocol)
    with pytest.raises(TelemetrySettingsError) as raised:
        span_processors()
    assert str(raised.value) == message


def test_the_resource_takes_the_service_name_from_the_environment_before_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.node.name=node-1,k8s.pod.name=rok-snapshotter-x")
    attributes = resource("snapshotter").attributes
    assert (attributes["service.name"], attributes["k8s.node.name"]) == ("rok-snapshotter", "node-1")
    assert attributes["k8s.pod.name"] == "rok-snapshotter-x"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
    assert resource("snapshotter").attributes["service.name"] == "from-attributes"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-service-name")
    assert resource("snapshotter").attributes["service.name"] == "from-service-name"
