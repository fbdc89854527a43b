"""The runs' clones are removed by the documented rule, against the fake API server: never while the run is
active, once it finished longer ago than the retention period, once its workflow is gone and the clone is as old;
an active run's clones are tied to its workflow, so that deleting the workflow removes them (garbage collection)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from rok_pipeline_watcher.clone_retention import CloneRetention
from rok_pipeline_watcher.kube_source import KubeSource

NS = "kubeflow-user-example-com"
PVCS = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
WORKFLOWS = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows"
NOW = datetime.now(UTC).replace(microsecond=0)  # the fake API server stamps what it creates with the real clock


def workflow(name: str, run_id: str, phase: str, finished: datetime | None = None) -> dict:
    status = {"phase": phase, "startedAt": "2026-12-01T00:00:00Z", "nodes": {}}
    if finished:
        status["finishedAt"] = finished.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": name, "labels": {"pipeline/runid": run_id}}, "status": status}


def clone(name: str, run_id: str) -> dict:
    labels = {"rok.kubeflow.org/run": run_id, "app.kubernetes.io/managed-by": "rok-restorer"}
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    return {"metadata": {"name": name, "labels": labels}, "spec": spec}


async def test_clones_go_by_the_rule_and_never_while_their_run_is_active(fake_kube):
    running = fake_kube.create(WORKFLOWS, workflow("wf-running", "run-a", "Running"))
    fake_kube.create(WORKFLOWS, workflow("wf-long-done", "run-b", "Succeeded", NOW - timedelta(hours=30)))
    fake_kube.create(WORKFLOWS, workflow("wf-just-done", "run-c", "Failed", NOW - timedelta(hours=2)))
    for name, run_id in (
        ("ws-run-a", "run-a"),
        ("data-run-a", "run-a"),
        ("ws-run-b", "run-b"),
        ("ws-run-c", "run-c"),
        ("ws-run-gone", "run-gone"),  # its workflow was deleted (created just now by the fake: young)
    ):
        fake_kube.create(PVCS, clone(name, run_id))
    fake_kube.create(PVCS, {"metadata": {"name": "my-notebook-workspace"}, "spec": {}})  # not a clone
    source = KubeSource(fake_kube.api_client, lambda event: asyncio.sleep(0), namespace=NS, retry_delay=0.02)
    watching = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(source.ready.wait(), 10)
        retention = CloneRetention(
            fake_kube.api_client,
            lambda: source.workflows.values(),
            keep=timedelta(hours=24),
            namespace=NS,
            clock=lambda: NOW,
        )
        assert await retention.sweep() == [f"{NS}/ws-run-b"]  # finished 30 h ago; run-c only 2 h ago

        left = {o["metadata"]["name"]: o for o in fake_kube.list_objects(PVCS)}
        assert set(left) == {"ws-run-a", "data-run-a", "ws-run-c", "ws-run-gone", "my-notebook-workspace"}
        for name in ("ws-run-a", "data-run-a"):  # the active run's: tied to its workflow
            assert left[name]["metadata"]["ownerReferences"] == [
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Workflow",
                    "name": "wf-running",
                    "uid": running["metadata"]["uid"],
                }
            ]
        assert "ownerReferences" not in left["ws-run-c"]["metadata"]

        # a day later: run-c's clone is due, and so is the one whose workflow is gone
        retention.clock = lambda: NOW + timedelta(days=2)
        assert sorted(await retention.sweep()) == [f"{NS}/ws-run-c", f"{NS}/ws-run-gone"]
        assert {o["metadata"]["name"] for o in fake_kube.list_objects(PVCS)} == {
            "ws-run-a",
            "data-run-a",
            "my-notebook-workspace",
        }

        # the active run's workflow is deleted: its clones go with it
        fake_kube.delete(f"{WORKFLOWS}/wf-running")
        assert {o["metadata"]["name"] for o in fake_kube.list_objects(PVCS)} == {"my-notebook-workspace"}
    finally:
        watching.cancel()
        try:
            await watching
        except asyncio.CancelledError:
            pass
