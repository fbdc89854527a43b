"""The Kubernetes source lists and watches KFP workflows and their pods through the real client."""

from __future__ import annotations

import asyncio
import copy
import logging

import pytest
from aiohttp import web
from rok_pipeline_watcher.kfp_api import KfpApi
from rok_pipeline_watcher.kube_source import KubeSource
from rokcommon.events import RunFinished, RunStarted, StepFinished, StepStarted

WORKFLOWS = "/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows"
PODS = "/api/v1/namespaces/{ns}/pods"
PVCS = "/api/v1/namespaces/{ns}/persistentvolumeclaims"


@pytest.fixture
async def kfp_api(tmp_path):
    """A KFP API server answering for the v2 fixture's run (``/apis/v2beta1``), to a bearer of its token."""
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    runs = {
        "55357e95-7b14-4cb8-b5f2-f669403832b9": {
            "run_id": "55357e95-7b14-4cb8-b5f2-f669403832b9",
            "experiment_id": "e-42",
            "display_name": "train on new data",
            "pipeline_version_reference": {"pipeline_id": "p-1", "pipeline_version_id": "pv-7"},
            "pipeline_spec": {"pipelineInfo": {"name": "ml-pipeline"}},
        }
    }

    def authorized(request):
        return request.headers.get("Authorization") == "Bearer s3cret"

    async def run(request):
        if not authorized(request):
            return web.json_response({"error": "unauthenticated"}, status=401)
        return web.json_response(runs[request.match_info["id"]])

    async def experiment(request):
        if not authorized(request):
            return web.json_response({"error": "unauthenticated"}, status=401)
        return web.json_response({"experiment_id": "e-42", "display_name": "churn"})

    app = web.Application()
    app.router.add_get("/apis/v2beta1/runs/{id}", run)
    app.router.add_get("/apis/v2beta1/experiments/{id}", experiment)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    api = KfpApi(f"http://127.0.0.1:{port}", token_file=token)
    yield api
    await api.close()
    await runner.cleanup()


class Published:
    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.seen = []

    async def __call__(self, event):
        self.seen.append(event)
        await self.queue.put(event)

    async def next(self, count=1):
        return [await asyncio.wait_for(self.queue.get(), 10) for _ in range(count)]


@pytest.fixture
async def source(fake_kube, kfp_api):
    published = Published()
    source = KubeSource(fake_kube.api_client, published, kfp=kfp_api, retry_delay=0.02)
    task = asyncio.create_task(source.run())
    await asyncio.wait_for(source.ready.wait(), 10)
    yield source, published
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def create_run(fake_kube, run, notebook=None):
    ns = run.workflow["metadata"]["namespace"]
    for claim, pv in (("ws-nb-1-run-8xfss", "pvc-1a2b"), ("data-nb-1-run-8xfss", "pvc-3c4d")):
        fake_kube.create(PVCS.format(ns=ns), {"metadata": {"name": claim}, "spec": {"volumeName": pv}})
    if notebook:
        fake_kube.create(PODS.format(ns=ns), notebook)
    for pod in run.pod_list:
        fake_kube.create(PODS.format(ns=ns), pod)
    return fake_kube.create(WORKFLOWS.format(ns=ns), run.workflow)


def running(run, *done):
    """The run as it was while only the named step nodes had finished (the others not yet there)."""
    run = run.copy()
    run.workflow["status"].update(phase="Running", finishedAt=None)
    keep = {run.node(n)["id"] for n in done}
    for node_id, node in list(run.workflow["status"]["nodes"].items()):
        if node["type"] == "Pod" and node_id not in keep:
            del run.workflow["status"]["nodes"][node_id]
    run.pod_list = [p for p in run.pod_list if p["metadata"]["name"] in keep]
    return run


def finish(fake_kube, run, partial):
    """Let the run go on to its end: the pods it had not created yet, then its final workflow state."""
    ns = run.workflow["metadata"]["namespace"]
    created = {p["metadata"]["name"] for p in partial.pod_list}
    for pod in run.pod_list:
        if pod["metadata"]["name"] not in created:
            fake_kube.create(PODS.format(ns=ns), pod)
    fake_kube.replace(workflow_path(run), run.workflow)


def workflow_path(run):
    meta = run.workflow["metadata"]
    return WORKFLOWS.format(ns=meta["namespace"]) + "/" + meta["name"]


async def test_a_kfp_v2_run_in_the_cluster_becomes_events_with_its_experiment_and_bound_volumes(
    fake_kube, source, v2_run, notebook_pod
):
    _, published = source
    create_run(fake_kube, v2_run, notebook_pod)

    events = await published.next(6)

    assert [type(e) for e in events] == [RunStarted, StepStarted, StepFinished, StepStarted, StepFinished, RunFinished]
    started = events[0]
    assert (started.experiment, started.pipeline_name, started.pipeline_version) == ("churn", "ml-pipeline", "pv-7")
    assert [v.name for v in started.volumes] == ["workspace-nb-1", "data-nb-1"]
    assert [(v.name, v.pv) for v in events[1].volumes] == [
        ("ws-nb-1-run-8xfss", "pvc-1a2b"),
        ("data-nb-1-run-8xfss", "pvc-3c4d"),
    ]


async def test_after_a_dropped_connection_the_watch_resumes_from_the_last_resource_version(fake_kube, source, v1_run):
    _, published = source
    partial = running(v1_run, "print-msg")
    create_run(fake_kube, partial)
    await published.next(3)  # run started, print-msg started and finished
    watches_before = len(fake_kube.watches("/apis/argoproj.io"))
    last_seen = fake_kube.get(workflow_path(v1_run))["metadata"]["resourceVersion"]

    fake_kube.drop_watches()
    await asyncio.to_thread(fake_kube.wait_for_watches, watches_before + 1, "/apis/argoproj.io")
    finish(fake_kube, v1_run, partial)

    resumed = fake_kube.watches("/apis/argoproj.io")[watches_before]
    assert resumed.params["resourceVersion"] == last_seen
    assert resumed.params["allowWatchBookmarks"] == "true"
    rest = await published.next(7)
    assert isinstance(rest[-1], RunFinished)
    assert [e.step.name for e in rest if isinstance(e, StepStarted)] == [
        "random-failure",
        "random-failure",
        "print-msg-2",
    ]


async def test_a_resource_version_too_old_for_the_server_makes_the_source_list_again_and_miss_nothing(
    fake_kube, source, v1_run
):
    _, published = source
    partial = running(v1_run, "print-msg")
    create_run(fake_kube, partial)
    await published.next(3)
    lists_before = [r for r in fake_kube.requests if r.path.startswith("/apis/") and "watch" not in r.params]

    with fake_kube.hold_watches():
        fake_kube.drop_watches()
        await asyncio.to_thread(fake_kube.wait_for_held, 2)  # both watches are gone and asking again
        finish(fake_kube, v1_run, partial)
        fake_kube.compact()

    rest = await published.next(7)
    lists_after = [r for r in fake_kube.requests if r.path.startswith("/apis/") and "watch" not in r.params]
    assert len(lists_after) == len(lists_before) + 1
    assert isinstance(rest[-1], RunFinished)
    assert len({e.event_id for e in published.seen}) == len(published.seen) == 10  # nothing twice


async def test_a_bookmark_moves_a_quiet_watch_forward_so_it_resumes_from_there(fake_kube, source):
    await asyncio.to_thread(fake_kube.wait_for_watches, 1, "/apis/argoproj.io")
    fake_kube.create("/api/v1/namespaces/other/configmaps", {"metadata": {"name": "unrelated"}})
    watches_before = len(fake_kube.watches("/apis/argoproj.io"))
    bookmarked = str(fake_kube.resource_version)

    fake_kube.bookmark()
    fake_kube.drop_watches()
    await asyncio.to_thread(fake_kube.wait_for_watches, watches_before + 1, "/apis/argoproj.io")

    assert fake_kube.watches("/apis/argoproj.io")[watches_before].params["resourceVersion"] == bookmarked


async def test_without_the_kfp_api_the_run_is_recorded_without_experiment_and_the_gap_is_logged(
    fake_kube, v2_run, notebook_pod, caplog, unused_tcp_port
):
    published = Published()
    kfp = KfpApi(f"http://127.0.0.1:{unused_tcp_port}", timeout=2)
    source = KubeSource(fake_kube.api_client, published, kfp=kfp, retry_delay=0.02)
    task = asyncio.create_task(source.run())
    create_run(fake_kube, v2_run, copy.deepcopy(notebook_pod))

    with caplog.at_level(logging.WARNING):
        (started,) = await published.next()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await kfp.close()

    assert isinstance(started, RunStarted)
    assert started.experiment is None
    assert "did not answer for run 55357e95-7b14-4cb8-b5f2-f669403832b9" in caplog.text


async def test_a_run_whose_clone_task_names_the_notebook_starts_from_it_and_carries_the_notebook_server(
    fake_kube, source, v2_run, notebook_pod
):
    """What a run compiled by ``rok compile`` looks like: the workflow has no annotation (the KFP SDK cannot set
    one), its ``create-volume-N`` task's pod names the notebook pod instead."""
    _, published = source
    del v2_run.workflow["metadata"]["annotations"]["rok/notebook-pod"]
    ns = v2_run.workflow["metadata"]["namespace"]
    clone_task = v2_run.pod_list[0]
    clone_task["metadata"].setdefault("annotations", {})["rok/notebook-pod"] = "nb-1-0"
    for claim, size in (("workspace-nb-1", "5Gi"), ("data-nb-1", "100Gi")):
        spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, "volumeName": claim}
        fake_kube.create(PVCS.format(ns=ns), {"metadata": {"name": claim}, "spec": spec})
    create_run(fake_kube, v2_run, notebook_pod)

    [started] = await published.next()

    assert isinstance(started, RunStarted)
    assert [v.name for v in started.volumes] == ["workspace-nb-1", "data-nb-1"]  # the notebook's, not a step's
    server = started.notebook
    assert server is not None
    assert (server.name, server.namespace, server.image) == ("nb-1", ns, "kubeflownotebookswg/jupyter-scipy:v1.8.0")
    assert [(v.claim, v.mount_path, v.size) for v in server.volumes] == [
        ("workspace-nb-1", "/home/jovyan", "5Gi"),
        ("data-nb-1", notebook_pod["spec"]["containers"][0]["volumeMounts"][-1]["mountPath"], "100Gi"),
    ]
