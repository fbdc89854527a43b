"""A run that ends while the watch is down, and is deleted soon after, is still told to its end: once each."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from rok_pipeline_watcher.kube_source import KubeSource
from rokcommon import bus
from rokcommon.events import RunFinished, StepFinished, StepStarted, model_for_subject
from rokcommon.streams import ensure_streams

WORKFLOWS = "/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows"
PODS = "/api/v1/namespaces/{ns}/pods"


def seen_running(run, *done, running=()):
    """The run while only the ``done`` steps had ended and the ``running`` ones ran (no other step there yet)."""
    run = run.copy()
    run.workflow["status"].update(phase="Running", finishedAt=None)
    for name in running:
        node = run.node(name)
        node.update(phase="Running", finishedAt=None)
        pod = run.pods[node["id"]]
        pod["status"]["phase"] = "Running"
        for status in pod["status"]["containerStatuses"]:
            status["state"] = {"running": {"startedAt": node["startedAt"]}}
    keep = {run.node(n)["id"] for n in (*done, *running)}
    for node_id, node in list(run.workflow["status"]["nodes"].items()):
        if node["type"] == "Pod" and node_id not in keep:
            del run.workflow["status"]["nodes"][node_id]
        elif node["type"] != "Pod":  # the workflow's DAG and Retry nodes go on while a step does
            node.update(phase="Running", finishedAt=None)
    run.pod_list = [p for p in run.pod_list if p["metadata"]["name"] in keep]
    return run


def path(obj, collection):
    meta = obj["metadata"]
    return collection.format(ns=meta["namespace"]) + "/" + meta["name"]


class Watcher:
    """The Kubernetes source publishing to JetStream, and a plain subscriber that sees every publish (a
    duplicate too, which the stream would drop)."""

    def __init__(self, fake_kube, js):
        self.source = KubeSource(fake_kube.api_client, lambda event: bus.publish(js, event), retry_delay=0.02)
        self.published: list = []
        self.arrived = asyncio.Event()

    async def on_message(self, message):
        self.published.append(model_for_subject(message.subject).decode(message.data))
        self.arrived.set()

    async def until(self, predicate, timeout=20):
        async def wait():
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(wait(), timeout)

    def forgot(self, run):
        return not any(w["metadata"]["uid"] == run.workflow["metadata"]["uid"] for w in self.source.workflows.values())


@pytest.fixture
async def watcher(fake_kube, nc, js):
    await ensure_streams(js)
    watcher = Watcher(fake_kube, js)
    sub = await nc.subscribe("rok.>", cb=watcher.on_message)
    task = asyncio.create_task(watcher.source.run())
    await asyncio.wait_for(watcher.source.ready.wait(), 10)
    yield watcher
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await sub.unsubscribe()


def kinds(events):
    return [(type(e).__name__, e.step.name, e.step.attempt) if hasattr(e, "step") else type(e).__name__ for e in events]


@pytest.mark.parametrize("deleted_first", ["workflow", "pods"])
async def test_a_run_that_ends_and_is_deleted_while_the_watch_is_down_publishes_every_end_once(
    fake_kube, watcher, v1_run, deleted_first
):
    ns = v1_run.workflow["metadata"]["namespace"]
    partial = seen_running(v1_run, "print-msg")
    for pod in partial.pod_list:
        fake_kube.create(PODS.format(ns=ns), pod)
    fake_kube.create(WORKFLOWS.format(ns=ns), partial.workflow)
    await watcher.until(lambda: len(watcher.published) == 3)  # run started, print-msg started and finished
    watches = len(fake_kube.watches())

    with fake_kube.hold_watches():
        fake_kube.drop_watches()
        for pod in v1_run.pod_list:  # the run goes on to its end …
            if pod not in partial.pod_list:
                fake_kube.create(PODS.format(ns=ns), pod)
        fake_kube.replace(path(v1_run.workflow, WORKFLOWS), v1_run.workflow)
        pods = [path(p, PODS) for p in v1_run.pod_list]  # … and is deleted: Workflow TTL, pod GC
        for gone in (
            [path(v1_run.workflow, WORKFLOWS), *pods]
            if deleted_first == "workflow"
            else [*pods, path(v1_run.workflow, WORKFLOWS)]
        ):
            fake_kube.delete(gone)
    await asyncio.to_thread(fake_kube.wait_for_watches, watches + 2)
    fake_kube.bookmark()  # the API server's periodic bookmark: the pod watch has seen all there is

    await watcher.until(lambda: watcher.forgot(v1_run))
    await watcher.until(lambda: any(isinstance(e, RunFinished) for e in watcher.published))
    events = watcher.published
    assert len({e.event_id for e in events}) == len(events) == 10  # every event, none twice
    finished = [(e.step.name, e.step.attempt, e.outcome) for e in events if isinstance(e, StepFinished)]
    assert finished == [
        ("print-msg", 0, "succeeded"),
        ("random-failure", 0, "failed"),
        ("random-failure", 1, "succeeded"),
        ("print-msg-2", 0, "succeeded"),
    ]
    assert [type(e) for e in events].count(RunFinished) == 1
    assert isinstance(events[-1], RunFinished) and events[-1].outcome == "succeeded"


async def test_a_run_gone_unseen_after_the_history_was_compacted_is_finished_from_its_last_state(
    fake_kube, watcher, v1_run
):
    ns = v1_run.workflow["metadata"]["namespace"]
    partial = seen_running(v1_run, "print-msg", running=["random-failure(0)"])
    for pod in partial.pod_list:
        fake_kube.create(PODS.format(ns=ns), pod)
    fake_kube.create(WORKFLOWS.format(ns=ns), partial.workflow)
    await watcher.until(lambda: len(watcher.published) == 4)  # run, print-msg started and finished, random-failure

    with fake_kube.hold_watches():
        fake_kube.drop_watches()
        fake_kube.delete(path(v1_run.workflow, WORKFLOWS))
        for pod in partial.pod_list:
            fake_kube.delete(path(pod, PODS))
        fake_kube.compact()  # down for longer than the server keeps history: it lists again

    await watcher.until(lambda: watcher.forgot(v1_run))
    await watcher.until(lambda: any(isinstance(e, RunFinished) for e in watcher.published))
    events = watcher.published
    assert len({e.event_id for e in events}) == len(events) == 6
    assert kinds(events[4:]) == [("StepFinished", "random-failure", 0), "RunFinished"]
    assert (events[4].outcome, events[5].outcome) == ("error", "error")  # how they ended is not known
    assert [e.step.name for e in events if isinstance(e, StepStarted)] == ["print-msg", "random-failure"]
