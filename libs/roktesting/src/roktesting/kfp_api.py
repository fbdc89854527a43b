"""A fake Kubeflow Pipelines API server for tests: the v2beta1 REST paths the KFP SDK's ``kfp.Client`` calls,
on 127.0.0.1, with its state in memory.

Nothing real can run KFP's API server here, so this one answers the real client library over HTTP with the
shapes of KFP's own models: every answer is a ``kfp_server_api`` model object (``V2beta1Pipeline``,
``V2beta1PipelineVersion``, ``V2beta1Experiment``, ``V2beta1Run``, …) serialised as the SDK serialises it,
and every request body is read back into one, so a field the SDK does not know is an error here too.

* ``GET /apis/v2beta1/healthz`` → ``V2beta1GetHealthzResponse`` (``multi_user`` as configured);
* ``POST /apis/v2beta1/pipelines/upload`` (multipart ``uploadfile``, ``name``/``display_name``, ``namespace``) →
  a ``V2beta1Pipeline`` and its first version; the same name twice is 409, as KFP answers;
* ``POST /apis/v2beta1/pipelines/upload_version`` (``pipelineid``, ``name``) → ``V2beta1PipelineVersion``;
* ``GET /apis/v2beta1/pipelines`` and ``GET /apis/v2beta1/experiments`` with KFP's ``filter`` (``EQUALS`` on
  ``display_name``) and ``namespace``; ``GET /apis/v2beta1/pipelines/{id}/versions``;
* ``GET /apis/v2beta1/experiments/{id}`` (what the pipeline-watcher asks of a run's experiment);
* ``POST /apis/v2beta1/experiments``, ``POST /apis/v2beta1/runs`` (the experiment and the pipeline version
  must exist), ``GET /apis/v2beta1/runs/{id}``.

A token, when set, is required as ``Authorization: Bearer <token>`` (401 otherwise). ``uploads`` keeps each
uploaded package by version id; ``requests`` records (method, path) of every call.

The ``fake_kfp`` fixture yields a started :class:`FakeKfp`.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp_server_api
import pytest

__all__ = ["FakeKfp", "fake_kfp"]

API = "/apis/v2beta1"


class _Body:
    """What ``ApiClient.deserialize`` reads: a response's ``data``."""

    def __init__(self, data: str) -> None:
        self.data = data


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _equals_display_name(query: dict[str, list[str]]) -> str | None:
    """The display name a KFP ``filter`` asks for (``EQUALS`` on ``display_name``), or None for no filter."""
    if "filter" not in query:
        return None
    for predicate in json.loads(query["filter"][0]).get("predicates", ()):
        if predicate.get("key") == "display_name" and predicate.get("operation") in ("EQUALS", 1):
            return str(predicate.get("stringValue", predicate.get("string_value")))
    raise ApiError(400, f"unsupported filter {query['filter'][0]}")


class FakeKfp:
    def __init__(self, *, token: str | None = None, multi_user: bool = False) -> None:
        self.token, self.multi_user = token, multi_user
        self.pipelines: dict[str, Any] = {}
        self.versions: dict[str, Any] = {}
        self.experiments: dict[str, Any] = {}
        self.runs: dict[str, Any] = {}
        self.uploads: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self._api = kfp_server_api.ApiClient()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKfp:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-kfp", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- the API ---------------------------------------------------------------------------------------------

    def _read(self, body: bytes, kind: str) -> Any:
        return self._api.deserialize(_Body(body.decode()), kind)

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: bytes, content_type: str) -> Any:
        now = datetime.now(UTC)
        one = {key: values[0] for key, values in query.items()}
        with self._lock:
            if method == "GET" and path == f"{API}/healthz":
                return kfp_server_api.V2beta1GetHealthzResponse(multi_user=self.multi_user)
            if method == "POST" and path == f"{API}/pipelines/upload":
                name = one.get("display_name") or one.get("name")
                if not name:
                    raise ApiError(400, "a pipeline needs a name")
                if any(p.display_name == name for p in self.pipelines.values()):
                    raise ApiError(409, f"a pipeline named {name!r} already exists")
                pipeline = kfp_server_api.V2beta1Pipeline(
                    pipeline_id=str(uuid.uuid4()),
                    display_name=name,
                    name=name,
                    description=one.get("description"),
                    namespace=one.get("namespace"),
                    created_at=now,
                )
                self.pipelines[pipeline.pipeline_id] = pipeline
                self._version(pipeline.pipeline_id, name, _upload(body, content_type), now)
                return pipeline
            if method == "POST" and path == f"{API}/pipelines/upload_version":
                pipeline_id = one.get("pipelineid", "")
                if pipeline_id not in self.pipelines:
                    raise ApiError(404, f"no pipeline {pipeline_id!r}")
                name = one.get("display_name") or one.get("name") or ""
                if any(v.pipeline_id == pipeline_id and v.display_name == name for v in self.versions.values()):
                    raise ApiError(409, f"pipeline {pipeline_id} already has a version named {name!r}")
                return self._version(pipeline_id, name, _upload(body, content_type), now)
            if method == "GET" and path == f"{API}/pipelines":
                wanted = _equals_display_name(query)
                found = [p for p in self.pipelines.values() if wanted is None or p.display_name == wanted]
                return kfp_server_api.V2beta1ListPipelinesResponse(pipelines=found or None, total_size=len(found))
            if method == "GET" and path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
                pipeline_id = path.split("/")[-2]
                found = [v for v in self.versions.values() if v.pipeline_id == pipeline_id]
                return kfp_server_api.V2beta1ListPipelineVersionsResponse(
                    pipeline_versions=found, total_size=len(found)
                )
            if method == "GET" and path == f"{API}/experiments":
                wanted = _equals_display_name(query)
                found = [
                    e
                    for e in self.experiments.values()
                    if (wanted is None or e.display_name == wanted)
                    and ("namespace" not in one or e.namespace == one["namespace"])
                ]
                return kfp_server_api.V2beta1ListExperimentsResponse(experiments=found or None, total_size=len(found))
            if method == "GET" and path.startswith(f"{API}/experiments/"):
                experiment_id = path.rsplit("/", 1)[-1]
                if experiment_id not in self.experiments:
                    raise ApiError(404, f"no experiment {experiment_id!r}")
                return self.experiments[experiment_id]
            if method == "POST" and path == f"{API}/experiments":
                experiment = self._read(body, "V2beta1Experiment")
                if not experiment.display_name:
                    raise ApiError(400, "an experiment needs a display_name")
                if self.multi_user and not experiment.namespace:
                    raise ApiError(400, "multi-user mode: an experiment needs a namespace")
                experiment.experiment_id, experiment.created_at = str(uuid.uuid4()), now
                experiment.storage_state = "AVAILABLE"
                self.experiments[experiment.experiment_id] = experiment
                return experiment
            if method == "POST" and path == f"{API}/runs":
                run = self._read(body, "V2beta1Run")
                if run.experiment_id not in self.experiments:
                    raise ApiError(404, f"no experiment {run.experiment_id!r}")
                reference = run.pipeline_version_reference
                if run.pipeline_spec is None and (
                    reference is None or reference.pipeline_version_id not in self.versions
                ):
                    raise ApiError(404, "a run needs a pipeline spec or an existing pipeline version")
                run.run_id, run.created_at, run.state = str(uuid.uuid4()), now, "PENDING"
                self.runs[run.run_id] = run
                return run
            if method == "GET" and path.startswith(f"{API}/runs/"):
                run_id = path.rsplit("/", 1)[-1]
                if run_id not in self.runs:
                    raise ApiError(404, f"no run {run_id!r}")
                return self.runs[run_id]
        raise ApiError(404, f"{method} {path} is not a path of this API")

    def _version(self, pipeline_id: str, name: str, package: bytes, now: datetime) -> Any:
        version = kfp_server_api.V2beta1PipelineVersion(
            pipeline_id=pipeline_id, pipeline_version_id=str(uuid.uuid4()), display_name=name, name=name, created_at=now
        )
        self.versions[version.pipeline_version_id] = version
        self.uploads[version.pipeline_version_id] = package
        return version

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                fake.requests.append((self.command, parts.path))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    if fake.token and self.headers.get("Authorization") != f"Bearer {fake.token}":
                        raise ApiError(401, "missing or wrong bearer token")
                    answer = fake.answer(
                        self.command, parts.path, parse_qs(parts.query), body, self.headers.get("Content-Type", "")
                    )
                    status, payload = 200, fake._api.sanitize_for_serialization(answer)
                except ApiError as error:
                    status = error.status
                    payload = fake._api.sanitize_for_serialization(
                        kfp_server_api.GoogleRpcStatus(code=status, message=str(error))
                    )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

        return Handler


def _upload(body: bytes, content_type: str) -> bytes:
    """The ``uploadfile`` part of a multipart upload."""
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, f"an upload is multipart/form-data, not {content_type!r}")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            return bytes(part.get_payload(decode=True) or b"")
    raise ApiError(400, "an upload needs its uploadfile part")


@pytest.fixture
def fake_kfp() -> Iterator[FakeKfp]:
    server = FakeKfp(token="kfp-test-token").start()
    try:
        yield server
    finally:
        server.stop()
