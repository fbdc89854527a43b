"""Argo's workflow controller, played against :class:`~roktesting.kubernetes.FakeKube` (part of
:class:`roktesting.kubecluster.Cluster`): a workflow's steps become pods, and its status follows them."""

from __future__ import annotations

import contextlib
import copy
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from roktesting.kubernetes import FakeKube

__all__ = ["Workflows"]

WORKFLOWS_API = "apis/argoproj.io/v1alpha1"


@dataclass
class Workflows:
    """Argo's workflow controller, for workflows whose entrypoint is a ``steps`` template (the KFP v1 layout).

    The steps of a group run side by side; a group's pods are created once every step of the group before it
    succeeded, each named ``<workflow>-<template>-<hash>``, owned by the workflow, labelled with it and with the
    run's ``pipeline/runid``, annotated with its node's id and name, the template's ``metadata`` added, and
    mounting those of the workflow's volumes its container mounts. The workflow's ``status.nodes`` follow the
    pods' phases (a ``Pod`` node per step, with its ``hostNodeName``), and the workflow ends ``Succeeded``, or
    ``Failed`` with its first failed step."""

    kube: FakeKube

    def reconcile(self) -> None:
        for workflow in self.kube.list_objects(f"/{WORKFLOWS_API}/workflows"):
            if (workflow.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Error"):
                continue
            with contextlib.suppress(Exception):  # deleted meanwhile
                self._advance(workflow)

    def _advance(self, workflow: dict[str, Any]) -> None:
        meta, spec = workflow["metadata"], workflow["spec"]
        templates = {t["name"]: t for t in spec["templates"]}
        name = meta["name"]
        status = copy.deepcopy(workflow.get("status") or {})
        if not status.get("phase"):
            status = {"phase": "Running", "startedAt": _now(), "nodes": {}}
        nodes = status.setdefault("nodes", {})
        root = nodes.setdefault(
            name,
            {
                "id": name,
                "name": name,
                "displayName": name,
                "type": "Steps",
                "templateName": spec["entrypoint"],
                "phase": "Running",
                "startedAt": status["startedAt"],
                "children": [],
            },
        )
        outcome = "Succeeded"
        for index, group in enumerate(templates[spec["entrypoint"]]["steps"]):
            phases = [
                self._step(workflow, templates, nodes, root, f"{name}[{index}].{step['name']}", step) for step in group
            ]
            if "Failed" in phases:
                outcome = "Failed"
                break
            if any(phase != "Succeeded" for phase in phases):
                outcome = "Running"  # the next group starts once every step of this one succeeded
                break
        if outcome != "Running":
            status["phase"] = root["phase"] = outcome
            status["finishedAt"] = root["finishedAt"] = _now()
        if status != workflow.get("status"):
            meta = workflow["metadata"]
            self.kube.patch(
                f"/{WORKFLOWS_API}/namespaces/{meta['namespace']}/workflows/{meta['name']}", {"status": status}
            )

    def _step(
        self,
        workflow: dict[str, Any],
        templates: dict[str, dict[str, Any]],
        nodes: dict[str, dict[str, Any]],
        root: dict[str, Any],
        node_name: str,
        step: dict[str, Any],
    ) -> str:
        """One step of a group: its pod created if it has none yet, its node following the pod; its phase."""
        name, namespace = workflow["metadata"]["name"], workflow["metadata"]["namespace"]
        node_id = f"{name}-{zlib.crc32(node_name.encode())}"
        pod_name = f"{name}-{step['template']}-{zlib.crc32(node_name.encode())}"
        if node_id not in nodes:
            pod = _step_pod(workflow, templates[step["template"]], pod_name, node_id, node_name)
            self.kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
            nodes[node_id] = {
                "id": node_id,
                "name": node_name,
                "displayName": step["name"],
                "type": "Pod",
                "templateName": step["template"],
                "phase": "Pending",
                "startedAt": _now(),
            }
            root["children"].append(node_id)
            return "Pending"
        node = nodes[node_id]
        pod = self.kube.get(f"/api/v1/namespaces/{namespace}/pods/{pod_name}")
        node["phase"] = phase = (pod.get("status") or {}).get("phase") or "Pending"
        if pod["spec"].get("nodeName"):
            node["hostNodeName"] = pod["spec"]["nodeName"]
        if phase in ("Succeeded", "Failed"):
            node.setdefault("finishedAt", _now())
        return str(phase)


def _step_pod(
    workflow: dict[str, Any], template: dict[str, Any], pod_name: str, node_id: str, node_name: str
) -> dict[str, Any]:
    meta, spec = workflow["metadata"], workflow["spec"]
    labels = {"workflows.argoproj.io/workflow": meta["name"]}
    if "pipeline/runid" in (meta.get("labels") or {}):
        labels["pipeline/runid"] = meta["labels"]["pipeline/runid"]
    own = template.get("metadata") or {}
    container = {"name": "main", **copy.deepcopy(template["container"])}
    used = {m["name"] for m in container.get("volumeMounts", [])}  # the workflow's volumes this step mounts
    return {
        "metadata": {
            "name": pod_name,
            "labels": {**own.get("labels", {}), **labels},
            "annotations": {
                **own.get("annotations", {}),
                "workflows.argoproj.io/node-id": node_id,
                "workflows.argoproj.io/node-name": node_name,
            },
            "ownerReferences": [
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Workflow",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "serviceAccountName": spec.get("serviceAccountName", "default"),
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [
                copy.deepcopy(v) for v in (*spec.get("volumes", []), *template.get("volumes", [])) if v["name"] in used
            ],
        },
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
