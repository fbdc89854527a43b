"""The watcher service publishes what it sees to JetStream, idempotently, each event the start of its trace, and
stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime

import yaml
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from rok_pipeline_watcher.main import serve
from rok_pipeline_watcher.settings import WatcherSettings
from rokcommon.events import StepFinished, StepStarted, model_for_subject
from rokcommon.telemetry import setup_telemetry

WORKFLOWS = "/apis/argoproj.io/v1alpha1/namespaces/kubeflow/workflows"
PODS = "/api/v1/namespaces/kubeflow/pods"


async def stored(js, count):
    """The first ``count`` messages of the pipeline stream, once they are there."""
    queue: asyncio.Queue = asyncio.Queue()
    sub = await js.subscribe("rok.>", stream="ROK_PIPELINE", ordered_consumer=True, cb=queue.put)
    try:
        return [await asyncio.wait_for(queue.get(), 20) for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def run_watcher(settings, fake_kube, until):
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, api_client=fake_kube.api_client, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 20)  # the listed state is translated and published
        return await until()
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_events_go_to_jetstream_with_their_id_as_nats_msg_id_and_a_restart_stores_no_duplicate(
    nats_server, js, fake_kube, v1_run
):
    settings = WatcherSettings(nats_url=nats_server.url, kfp_api_url="http://127.0.0.1:9", kfp_api_timeout=0.5)
    for pod in v1_run.pod_list:
        fake_kube.create(PODS, pod)
    fake_kube.create(WORKFLOWS, v1_run.workflow)

    messages = await run_watcher(settings, fake_kube, lambda: stored(js, 10))
    await run_watcher(settings, fake_kube, lambda: stored(js, 10))  # a restart sees the same history again

    info = await js.stream_info("ROK_PIPELINE")
    assert info.state.messages == 10
    events = [model_for_subject(m.subject).decode(m.data) for m in messages]
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [e.event_id for e in events]
    assert [m.subject for m in messages] == [e.subject_for() for e in events]
    step = next(e for e in events if isinstance(e, StepStarted))
    assert messages[events.index(step)].subject == "rok.step.started.v1.ip-10-0-1-17_ec2_internal"


async def test_python_m_rok_pipeline_watcher_reports_ready_and_stops_cleanly_on_sigterm(
    nats_server, fake_kube, tmp_path
):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": fake_kube.url}}],
                "users": [{"name": "me", "user": {"token": "t"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
                "current-context": "fake",
            }
        )
    )
    env = {
        **os.environ,
        "ROK_NATS_URL": nats_server.url,
        "ROK_KUBE": "kubeconfig",
        "ROK_KUBECONFIG": str(kubeconfig),
        "ROK_LOG_FORMAT": "text",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rok_pipeline_watcher", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        lines = []
        while not any("ready" in line for line in lines):
            line = await asyncio.wait_for(process.stderr.readline(), 20)
            assert line, f"the watcher exited: {lines}"
            lines.append(line.decode())
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert any(r.path == "/apis/argoproj.io/v1alpha1/workflows" for r in fake_kube.requests)


async def test_a_standby_replica_publishes_nothing_until_it_holds_the_lease(nats_server, js, fake_kube, v1_run):
    for pod in v1_run.pod_list:
        fake_kube.create(PODS, pod)
    fake_kube.create(WORKFLOWS, v1_run.workflow)
    leases = "/apis/coordination.k8s.io/v1/namespaces/rok/leases"
    fake_kube.create(
        leases,
        {
            "metadata": {"name": "rok-pipeline-watcher", "namespace": "rok"},
            "spec": {
                "holderIdentity": "replica-a",
                "leaseDurationSeconds": 3,
                "renewTime": datetime.now(UTC).isoformat(),
            },
        },
    )
    settings = WatcherSettings(
        nats_url=nats_server.url,
        kfp_api_url="http://127.0.0.1:9",
        kfp_api_timeout=0.5,
        leader_election=True,
        lease_namespace="rok",
        pod_name="replica-b",
    )

    async def standby_then_leader():
        await asyncio.sleep(1.5)  # replica-a's lease is still valid: replica-b only waits
        assert (await js.stream_info("ROK_PIPELINE")).state.messages == 0
        return await stored(js, 10)  # once it expires, replica-b leads and publishes the run

    messages = await run_watcher(settings, fake_kube, standby_then_leader)
    assert len(messages) == 10
    lease = fake_kube.get(f"{leases}/rok-pipeline-watcher")["spec"]
    assert lease["leaseTransitions"] == 1  # replica-b took it over from replica-a …
    assert "holderIdentity" not in lease  # … and gave it up when it stopped


async def test_each_event_the_watcher_publishes_starts_its_own_trace_named_for_its_subject_with_run_and_step(
    nats_server, js, fake_kube, v1_run
):
    spans = InMemorySpanExporter()
    setup_telemetry("pipeline-watcher").tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    settings = WatcherSettings(nats_url=nats_server.url, kfp_api_url="http://127.0.0.1:9", kfp_api_timeout=0.5)
    for pod in v1_run.pod_list:
        fake_kube.create(PODS, pod)
    fake_kube.create(WORKFLOWS, v1_run.workflow)

    messages = await run_watcher(settings, fake_kube, lambda: stored(js, 10))

    producers = {
        format(s.context.trace_id, "032x"): s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER
    }
    traces = set()
    for message in messages:
        event = model_for_subject(message.subject).decode(message.data)
        trace_id = message.headers["traceparent"].split("-")[1]
        span = producers[trace_id]
        assert span.parent is None, "a step event's trace starts at its publish"
        assert span.name == f"{message.subject} publish"
        run = event.run if hasattr(event, "run") else event.step.run
        assert span.attributes["rok.run_id"] == run.run_id
        assert span.attributes["rok.namespace"] == run.namespace
        if isinstance(event, StepStarted | StepFinished):
            assert span.attributes["rok.step"] == event.step.name
        traces.add(trace_id)
    assert len(traces) == len(messages)  # one trace per event
