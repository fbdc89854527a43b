"""A local run's state as Argo and Kubernetes would show it: a ``Workflow`` with one ``Pod`` node per step
(the KFP v1 layout), a pod per step bound to this machine and mounting the run's directories as host paths,
and a "notebook pod" mounting the notebook's directories.

The runner changes this state as the run goes on; each change goes through the same
:class:`~rok_pipeline_watcher.translator.Translator` as the Kubernetes source's objects do.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rokcommon.versions import stable_id

from rok_pipeline_watcher import argo
from rok_pipeline_watcher.runner.pipeline import Pipeline
from rok_pipeline_watcher.translator import RunInfo, RunState


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod(name: str, uid: str, node: str, volumes: list[tuple[str, Path]], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "uid": uid, "labels": labels, "annotations": {}, "creationTimestamp": _now()},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": argo.MAIN_CONTAINER, "volumeMounts": [{"name": v, "mountPath": str(p)} for v, p in volumes]}
            ],
            "volumes": [{"name": v, "hostPath": {"path": str(p), "type": "Directory"}} for v, p in volumes],
        },
        "status": {"phase": "Pending"},
    }


class LocalWorkflow:
    def __init__(
        self,
        pipeline: Pipeline,
        *,
        run_id: str,
        workflow_uid: str,
        namespace: str,
        node: str,
        run_name: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.run_id, self.uid, self.namespace, self.node = run_id, workflow_uid, namespace, node
        base = re.sub(r"[^a-z0-9-]+", "-", pipeline.pipeline.lower()).strip("-")[:40] or "pipeline"
        self.name = f"{base}-{run_id[:8]}"
        self.run_name = run_name or self.name
        self.phase = "Pending"
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.run_volumes: list[tuple[str, Path]] = []
        self.metrics: dict[str, float] = {}  # what the steps reported, set once they are done
        notebook = [(v.name, v.path) for v in pipeline.volumes]
        self.notebook_pod = _pod("notebook", stable_id(workflow_uid, "notebook"), node, notebook, {})

    def node_id(self, step: str) -> str:
        """The step's node id, derived from the workflow and the step's name as Argo derives it."""
        return f"{self.name}-{int(stable_id(self.name, step)[:8], 16)}"

    # --- transitions -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self.phase, self.started_at = "Running", _now()

    def step_pending(self, step: str) -> None:
        """The step's pod exists and is bound to this machine, mounting the run's volumes."""
        node_id = self.node_id(step)
        self.nodes[node_id] = self._pod_node(step, "Pending", startedAt=_now(), hostNodeName=self.node)
        labels = {argo.RUN_ID_LABEL: self.run_id, argo.WORKFLOW_LABEL: self.name}
        pod = _pod(node_id, stable_id(self.uid, node_id, "pod"), self.node, self.run_volumes, labels)
        pod["metadata"]["annotations"][argo.NODE_ID_ANNOTATION] = node_id
        # The runner is this step's guard: it starts the step only once the before-snapshot is committed and
        # ends it only once the after-snapshot is, so the step's snapshots are consistent, not best effort.
        pod["spec"]["initContainers"] = [{"name": argo.GUARD_CONTAINER, "restartPolicy": "Always"}]
        self.pods[node_id] = pod

    def step_running(self, step: str) -> None:
        node_id = self.node_id(step)
        self.nodes[node_id]["phase"] = "Running"
        self.pods[node_id]["status"] = {
            "phase": "Running",
            "containerStatuses": [{"name": argo.MAIN_CONTAINER, "state": {"running": {"startedAt": _now()}}}],
        }

    def step_done(self, step: str, exit_code: int) -> None:
        node_id = self.node_id(step)
        phase = "Succeeded" if exit_code == 0 else "Failed"
        finished = _now()
        self.nodes[node_id].update(phase=phase, finishedAt=finished)
        if exit_code:
            self.nodes[node_id]["message"] = f"failed with exit code {exit_code}"
        terminated = {
            "exitCode": exit_code,
            "finishedAt": finished,
            "reason": "Completed" if not exit_code else "Error",
        }
        self.pods[node_id]["status"] = {
            "phase": phase,
            "containerStatuses": [{"name": argo.MAIN_CONTAINER, "state": {"terminated": terminated}}],
        }

    def step_omitted(self, step: str) -> None:
        """A step that will not run (a step it depends on failed)."""
        self.nodes[self.node_id(step)] = self._pod_node(step, "Omitted", message="omitted: depends condition not met")

    def _pod_node(self, step: str, phase: str, **fields: str) -> dict[str, Any]:
        """The workflow node of a step's pod, as Argo records it."""
        return {
            "id": self.node_id(step),
            "name": f"{self.name}.{step}",
            "displayName": step,
            "type": "Pod",
            "templateName": step,
            "boundaryID": self.name,
            "phase": phase,
            **fields,
        }

    def finish(self, phase: str) -> None:
        """End the run: ``Succeeded``, ``Failed`` (a step failed) or ``Error`` (the runner could not go on)."""
        self.phase, self.finished_at = phase, _now()

    # --- what the translator reads ---------------------------------------------------------------------------

    def workflow(self) -> dict[str, Any]:
        root = {
            "id": self.name,
            "name": self.name,
            "displayName": self.name,
            "type": "DAG",
            "phase": self.phase,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "children": list(self.nodes),
        }
        return {
            "apiVersion": argo.API_VERSION,
            "kind": "Workflow",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "labels": {argo.RUN_ID_LABEL: self.run_id},
                "annotations": {
                    argo.RUN_NAME_ANNOTATION: self.run_name,
                    argo.WORKSPACE_ANNOTATION: self.pipeline.volumes[0].name,
                    argo.NOTEBOOK_POD_ANNOTATION: "notebook",
                },
            },
            "status": {
                "phase": self.phase,
                "startedAt": self.started_at,
                "finishedAt": self.finished_at,
                "nodes": {self.name: root, **self.nodes},
            },
        }

    def state(self) -> RunState:
        return RunState(
            workflow=self.workflow(),
            pods=self.pods,
            info=RunInfo(
                pipeline_name=self.pipeline.pipeline, experiment=self.pipeline.experiment, metrics=self.metrics
            ),
            notebook_pod=self.notebook_pod,
        )
