"""``rok run`` against the real services (``rok up`` in a temporary state directory): versions recorded,
the notebook untouched, a failing step named; and every process's spans, sent over OTLP/HTTP to a fake collector,
connect into one trace per step event and one per restore."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from rokcommon.credentials import web_token
from roktesting.otlp import OtlpCollector
from roktesting.ports import free_port

ROK = str(Path(sys.executable).parent / "rok")
EXAMPLE = Path(__file__).parents[3] / "examples" / "churn"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def system(tmp_path_factory, otlp_collector: OtlpCollector):
    """nats-server and the four services, started by ``rok up`` on free ports, stopped by ``rok down``; they and
    every command export their spans to the collector (the traces endpoint only: no metrics are sent)."""
    state = tmp_path_factory.mktemp("rok-state")
    env = {
        **os.environ,
        "ROK_STATE_DIR": str(state),
        "ROK_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "ROK_REGISTRY_PORT": str(free_port()),
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_collector.traces_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.node.name=test-node,deployment.environment=test",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # milliseconds between a process's exports
        "ROK_VOLUME_ROOTS": str(tmp_path_factory.getbasetemp()),  # the tests' notebooks are in their tmp_path
        "ROK_RESTORE_ROOTS": str(tmp_path_factory.getbasetemp()),  # and so are the web page's restores
    }
    for variable in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_SDK_DISABLED", "ROK_OTEL_FILE"):
        env.pop(variable, None)
    up = subprocess.run([ROK, "up"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        yield env
    finally:
        subprocess.run([ROK, "down"], env=env, capture_output=True, timeout=60)


def rok(env, *args):
    return subprocess.run([ROK, *args], env=env, capture_output=True, text=True, timeout=120)


def tags(env, url):
    """A version's tags, as the registry's HTTP API answers."""
    query = urllib.parse.urlencode({"url": url})
    address = f"http://127.0.0.1:{env['ROK_REGISTRY_PORT']}/api/v1/namespaces/local/version?{query}"
    token = web_token(Path(env["ROK_STATE_DIR"]))  # the local user's, as rok up wrote it
    request = urllib.request.Request(address, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["tags"]


def test_the_example_pipeline_runs_every_step_between_committed_snapshots_in_a_clone(system, tmp_path):
    example = tmp_path / "churn"
    shutil.copytree(EXAMPLE, example)
    before = {p.relative_to(example): p.read_bytes() for p in (example / "notebook").rglob("*") if p.is_file()}

    result = rok(system, "run", str(example / "pipeline.yaml"))

    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
    urls = dict(line.split() for line in result.stdout.splitlines() if line.startswith("  "))
    assert list(urls) == [
        "initial",
        "prepare/before",
        "prepare/after",
        "train/before",
        "train/after",
        "evaluate/before",
        "evaluate/after",
    ]
    assert all(url.startswith("rok://local/") for url in urls.values())
    assert "final" in tags(system, urls["evaluate/after"])
    after = {p.relative_to(example): p.read_bytes() for p in (example / "notebook").rglob("*") if p.is_file()}
    assert after == before  # the steps ran in the clone; the notebook's own directories are untouched
    runs = Path(system["ROK_STATE_DIR"]) / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # the clone went once its versions held it (--keep keeps)


def test_a_failing_step_exits_non_zero_naming_it_and_its_after_snapshot_is_tagged_failed(system, tmp_path):
    (tmp_path / "home").mkdir()
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        "pipeline: broken\nexperiment: trials\nvolumes:\n  - name: workspace\n    path: ./home\n"
        "steps:\n  - name: crash\n    run: echo partial > out.txt; exit 4\n"
        "  - name: never\n    run: touch never.txt\n    after: [crash]\n"
    )

    result = rok(system, "run", str(pipeline))

    assert result.returncode != 0
    assert "step 'crash' failed with exit code 4; not run: never" in result.stderr
    urls = dict(line.split() for line in result.stdout.splitlines() if line.startswith("  "))
    assert "never/before" not in urls
    assert "failed" in tags(system, urls["crash/after"])


def wait_for(condition, what: str, timeout: float = 30.0):
    """``condition()``'s first true answer, asked until it gives one (the processes export every 0.2 s)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        answer = condition()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f}s"
        time.sleep(0.2)


def test_each_step_event_is_one_trace_from_rok_run_to_the_registry_commit_and_a_restore_one_from_rok_restore(
    system, otlp_collector: OtlpCollector, tmp_path
):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("hello\n")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        "pipeline: traced\nexperiment: tracing\nvolumes:\n  - name: workspace\n    path: ./home\n"
        "steps:\n  - name: write\n    run: echo more >> notes.txt\n"
    )
    result = rok(system, "run", str(pipeline))
    assert result.returncode == 0, result.stderr
    run_id = next(line.split()[1].rstrip(",") for line in result.stdout.splitlines() if line.startswith("run "))
    urls = dict(line.split() for line in result.stdout.splitlines() if line.startswith("  "))

    def of_the_run(span):
        return span["attributes"].get("rok.run_id") == run_id

    # every step event rok run published is the root of its own trace, which reaches the registry's commit
    def step_traces():
        traces = otlp_collector.traces()
        roots = {
            trace_id: root
            for trace_id, spans in traces.items()
            for root in spans
            if root["parent_id"] is None
            and root["service"] == "rok-run"
            and of_the_run(root)
            and root["name"].startswith("rok.step.")
        }
        complete = {
            trace_id: roots[trace_id]
            for trace_id in roots
            if {"registry record SnapshotCompleted", "registry db commit"} <= {s["name"] for s in traces[trace_id]}
        }
        return complete if len(complete) == 2 else None  # the step's started and finished events

    traced = wait_for(step_traces, "trace of each step event through the snapshot to the registry's commit")
    for trace_id, root in traced.items():
        spans = otlp_collector.traces()[trace_id]
        assert root["kind"] == "PRODUCER"
        assert root["attributes"]["rok.step"] == "write"
        assert root["attributes"]["rok.namespace"] == "local"
        assert {"rok-run", "rok-snapshotter", "rok-registry"} <= {s["service"] for s in spans}
        snapshot_spans = {s["name"] for s in spans if s["service"] == "rok-snapshotter"}
        assert {"rok.store.snapshot", "rok.snapshot.completed.v1 publish"} <= snapshot_spans
        consumed = [s for s in spans if s["kind"] == "CONSUMER"]
        assert {s["service"] for s in consumed} == {"rok-snapshotter", "rok-registry"}
        assert all(of_the_run(s) and s["attributes"]["rok.step"] == "write" for s in consumed), consumed
        # the resource: OTEL_RESOURCE_ATTRIBUTES in every process
        assert all(s["resource"]["k8s.node.name"] == "test-node" for s in spans)

    # the registry recorded none of the run's events in a trace of its own
    recorded = [s for s in otlp_collector.spans if s["name"].startswith("registry record") and of_the_run(s)]
    assert recorded
    produced = {
        trace_id
        for trace_id, spans in otlp_collector.traces().items()
        if any(s["parent_id"] is None and s["service"] == "rok-run" for s in spans)
    }
    assert {s["trace_id"] for s in recorded} <= produced, "a registry span of the run has no producer in its trace"

    # a restore from the command line: one trace from `rok restore` through the restorer
    restored = rok(system, "restore", urls["write/after"], "--to", str(tmp_path / "restored"))
    assert restored.returncode == 0, restored.stderr

    def restore_trace(service: str, name: str):
        for spans in otlp_collector.traces().values():
            names = {(s["service"], s["name"]) for s in spans}
            if (service, name) in names and ("rok-restorer", "rok.store.restore") in names:
                return spans
        return None

    spans = wait_for(lambda: restore_trace("rok-cli", "rok restore"), "trace of the restore")
    (root,) = [s for s in spans if s["parent_id"] is None]
    assert (root["service"], root["name"]) == ("rok-cli", "rok restore")
    assert root["attributes"]["rok.url"] == urls["write/after"]
    assert {"rok-cli", "rok-restorer", "rok-registry"} <= {s["service"] for s in spans}
    (restoring,) = [s for s in spans if s["service"] == "rok-restorer" and s["name"] == "rok.restore"]
    assert restoring["attributes"]["rok.restore.request_id"] == root["attributes"]["rok.restore.request_id"]

    # and one from the web page's restore button, whose request is the trace's root
    answer = urllib.request.urlopen(
        urllib.request.Request(
            f"http://127.0.0.1:{system['ROK_REGISTRY_PORT']}/restores",
            data=json.dumps({"url": urls["write/before"], "target": str(tmp_path / "from-web")}).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {web_token(Path(system['ROK_STATE_DIR']))}",  # the local user's
            },
            method="POST",
        ),
        timeout=10,
    )
    assert answer.status == 202
    spans = wait_for(lambda: restore_trace("rok-registry", "POST /restores"), "trace of the web page's restore")
    (root,) = [s for s in spans if s["parent_id"] is None]
    assert (root["service"], root["name"], root["kind"]) == ("rok-registry", "POST /restores", "SERVER")

    # request-reply spans are named after the query, never after the requester's inbox
    names = {s["name"] for s in otlp_collector.spans}
    assert not [n for n in names if n.startswith("_INBOX")], sorted(names)
    assert "rok.registry.resolve.v1 reply publish" in names
