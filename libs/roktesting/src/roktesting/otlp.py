"""A fake OpenTelemetry collector: an OTLP/HTTP receiver on loopback that decodes what exporters really send.

Every process of a test exports to it (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector.traces_endpoint``); it
decodes each ``POST /v1/traces`` (``application/x-protobuf``) with the ``opentelemetry-proto`` messages, as a
collector does, and keeps each span as a plain dict for the test to read.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["OtlpCollector", "otlp_collector"]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


class OtlpCollector:
    """The spans received so far (``spans``), each ``{"name", "service", "trace_id", "span_id", "parent_id",
    "kind", "attributes", "resource"}`` with ids in hex."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests: list[str] = []  # the path of every request, in order
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the collector first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def traces_endpoint(self) -> str:
        return f"{self.url}/v1/traces"

    def start(self) -> OtlpCollector:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with collector._lock:
                    collector.requests.append(self.path)
                if self.path != "/v1/traces":
                    self.send_response(200)  # metrics and logs: accepted, not kept
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(415, "OTLP/HTTP takes application/x-protobuf here")
                    return
                collector._receive(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="otlp-collector", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _receive(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        {
                            "name": span.name,
                            "service": resource.get("service.name"),
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex() or None,
                            "kind": Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                            "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                            "resource": resource,
                        }
                    )
        with self._lock:
            self.spans.extend(received)

    def traces(self) -> dict[str, list[dict[str, Any]]]:
        """trace id → its spans (received so far)."""
        with self._lock:
            spans = list(self.spans)
        found: dict[str, list[dict[str, Any]]] = {}
        for span in spans:
            found.setdefault(span["trace_id"], []).append(span)
        return found


@pytest.fixture(scope="module")
def otlp_collector() -> Iterator[OtlpCollector]:
    """A started fake collector for a module's tests (its processes export as long as the module runs)."""
    collector = OtlpCollector().start()
    try:
        yield collector
    finally:
        collector.stop()
