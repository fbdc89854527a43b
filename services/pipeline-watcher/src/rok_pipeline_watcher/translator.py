"""The one translator: the state of a run (an Argo ``Workflow`` and its pods) → rok's run and step events.

Both sources feed it: the Kubernetes source with the objects it watches, the local runner with objects it
builds in the same shape. It is pure (no broker, no client) and remembers only the ids of the events it has
already emitted, so feeding it the same state twice emits nothing new. A restarted watcher starts with an
empty memory and emits history again; the ids are deterministic (workflow uid + node id + phase) and the
stream drops the copies (``Nats-Msg-Id``).

When does a step start and end?

* ``StepStarted`` as soon as the step's pod is bound to a node and its node is not ``Skipped``/``Omitted``:
  with a step guard the pod is still held (Pending) at that point, so the before-snapshot sees the volumes
  before the user's code touches them.
* ``StepFinished`` when the workflow node is done, or earlier when the pod's ``main`` container has
  terminated: a guarded pod stays Running until its guard lets it go, which it does only after the
  after-snapshot is committed.

Which volumes? The PVCs (or, from the local runner, host paths) that the ``main`` container mounts. The
workspace is the claim named by the workflow annotation ``rok/workspace-claim``; without it, the first one
mounted. Steps that mount no volume, KFP v1 pods reused from the cache and nodes that never ran take no
snapshot and produce no event.

Which volumes does the run start with? Those of the notebook's pod, when the run names it and the source found
it; otherwise those of the run's first step. The run names it with the annotation ``rok/notebook-pod``, on the
workflow or on one of its pods: ``rok compile`` (and :func:`rok_pipeline_watcher.kfp.clones.clone_volumes`) set
it on the ``create-volume-N`` tasks' pods, as the KFP SDK cannot annotate the workflow. The run's
``RunStarted`` then also carries the notebook server itself (:func:`rokcommon.notebooks.notebook_server`: image,
resources, env, each volume's mount path and claim), which the registry gives with every version of the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rokcommon.events import (
    Event,
    Outcome,
    RunFinished,
    RunRef,
    RunStarted,
    StepFinished,
    StepRef,
    StepStarted,
    VolumeRef,
)
from rokcommon.notebooks import NotebookServer, notebook_server

from rok_pipeline_watcher import argo

log = logging.getLogger(__name__)

_OUTCOMES: dict[str, Outcome] = {"Succeeded": "succeeded", "Failed": "failed", "Error": "error"}


@dataclass(frozen=True)
class RunInfo:
    """What the KFP API knows of a run. ``experiment`` None: it could not be asked (fallback bucket)."""

    pipeline_name: str | None = None
    pipeline_version: str | None = None
    experiment: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)  # what the run's steps reported, once it ended


@dataclass(frozen=True)
class RunState:
    """Everything the translator needs about one run at one moment."""

    workflow: Mapping[str, Any]
    pods: Mapping[str, Mapping[str, Any]]  # by workflow node id
    info: RunInfo = RunInfo()
    claims: Mapping[str, str | None] = field(default_factory=dict)  # claim name → bound PV name
    notebook_pod: Mapping[str, Any] | None = None
    notebook_claims: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # its claims, as JSON
    # False while the source may not have seen every pod yet: the run is not finished while a step's pod is
    # missing (its events would come after the run's end)
    pods_complete: bool = True


class Translator:
    def __init__(self) -> None:
        self._emitted: dict[str, set[str]] = {}  # workflow uid → ids of the events already emitted

    def forget(self, workflow_uid: str) -> None:
        """Drop the memory of a workflow that is gone."""
        self._emitted.pop(workflow_uid, None)

    def translate(self, state: RunState) -> list[Event]:
        """The events this state implies that were not emitted before, in the order they happened."""
        workflow = state.workflow
        meta = argo.metadata(workflow)
        run_id = argo.labels(workflow).get(argo.RUN_ID_LABEL)
        uid = meta.get("uid")
        if not run_id or not uid:
            return []
        run = RunRef(namespace=meta.get("namespace") or "default", run_id=run_id, workflow_uid=uid)
        emitted = self._emitted.setdefault(uid, set())
        events = [e for e in self._events(run, state) if e.event_id not in emitted]
        emitted.update(e.event_id for e in events)
        return events

    def _events(self, run: RunRef, state: RunState) -> list[Event]:
        status = state.workflow.get("status") or {}
        phase = status.get("phase") or ""
        claims = state.claims
        workspace = argo.annotations_of(state.workflow).get(argo.WORKSPACE_ANNOTATION)
        steps: list[Event] = []
        first: tuple[str, list[VolumeRef]] | None = None
        missing = False
        for node in argo.step_nodes(state.workflow):
            if node.phase in argo.NO_SNAPSHOT:
                continue
            pod = state.pods.get(node.node_id)
            missing = missing or pod is None
            if pod is None or argo.pod_is_cached(pod):
                continue
            host = (pod.get("spec") or {}).get("nodeName") or node.host
            volumes = volume_refs(pod, claims, workspace)
            if not host or not volumes:
                continue
            first = first or (host, volumes)
            step = StepRef(run=run, step_id=node.node_id, name=node.name, attempt=node.attempt)
            guarded = argo.pod_is_guarded(pod)
            steps.append(
                StepStarted.make(
                    step=step,
                    node=host,
                    volumes=tuple(volumes),
                    guarded=guarded,
                    started_at=timestamp(node.started_at or argo.metadata(pod).get("creationTimestamp")),
                )
            )
            outcome = _OUTCOMES.get(node.phase)
            exit_code = argo.main_exit_code(pod)
            if outcome is None and exit_code is not None:
                outcome = "succeeded" if exit_code == 0 else "failed"
            if outcome is not None:
                steps.append(
                    StepFinished.make(
                        step=step,
                        node=host,
                        volumes=tuple(volumes),
                        guarded=guarded,
                        outcome=outcome,
                        finished_at=timestamp(node.finished_at or argo.main_finished_at(pod)),
                    )
                )
        origin = self._run_origin(state, claims, workspace) or first
        if origin is None or not (phase or status.get("startedAt")):
            return []  # nothing to snapshot yet: the run is recorded once a volume is known
        node_name, volumes = origin
        started = RunStarted.make(
            notebook=self._notebook(state, workspace),
            run=run,
            run_name=argo.annotations_of(state.workflow).get(argo.RUN_NAME_ANNOTATION)
            or argo.metadata(state.workflow).get("name")
            or run.run_id,
            pipeline_name=state.info.pipeline_name or pipeline_name(state.workflow),
            pipeline_version=state.info.pipeline_version,
            experiment=state.info.experiment,
            node=node_name,
            volumes=tuple(volumes),
            started_at=timestamp(status.get("startedAt") or argo.metadata(state.workflow).get("creationTimestamp")),
        )
        events: list[Event] = [started, *steps]
        if phase in _OUTCOMES and (state.pods_complete or not missing):
            events.append(
                RunFinished.make(
                    run=run,
                    outcome=_OUTCOMES[phase],
                    finished_at=timestamp(status.get("finishedAt")),
                    metrics=dict(state.info.metrics),
                )
            )
        return events

    def _notebook(self, state: RunState, workspace: str | None) -> NotebookServer | None:
        if state.notebook_pod is None:
            return None
        try:
            return notebook_server(state.notebook_pod, state.notebook_claims, workspace=workspace)
        except ValueError as error:
            log.warning("the run's notebook server is not recorded: %s", error)
            return None

    def _run_origin(
        self, state: RunState, claims: Mapping[str, str | None], workspace: str | None
    ) -> tuple[str, list[VolumeRef]] | None:
        pod = state.notebook_pod
        if pod is None:
            return None
        host = (pod.get("spec") or {}).get("nodeName")
        volumes = volume_refs(pod, claims, workspace, container=None)
        return (host, volumes) if host and volumes else None


def volume_refs(
    pod: Mapping[str, Any],
    claims: Mapping[str, str | None],
    workspace: str | None,
    container: str | None = argo.MAIN_CONTAINER,
) -> list[VolumeRef]:
    """The volumes of a pod as rok sees them, the workspace first."""
    mounted = argo.mounted_volumes(pod, container=container)
    names = [m.claim or m.pod_volume for m in mounted]
    if workspace not in names and not any(m.pod_volume == workspace for m in mounted):
        workspace = names[0] if names else None
    pod_uid, pod_name = argo.metadata(pod).get("uid"), argo.metadata(pod).get("name")
    refs = []
    for m, name in zip(mounted, names, strict=True):
        role = "workspace" if workspace in (name, m.pod_volume) else "data"
        if m.claim:
            refs.append(
                VolumeRef(
                    name=name,
                    role=role,
                    pvc=m.claim,
                    pv=claims.get(m.claim),
                    pod_uid=pod_uid,
                    pod_name=pod_name,
                    pod_volume=m.pod_volume,
                )
            )
        else:
            refs.append(VolumeRef(name=name, role=role, path=m.path))
    refs.sort(key=lambda v: v.role != "workspace")
    return refs


def pipeline_name(workflow: Mapping[str, Any]) -> str:
    """The pipeline's name from the workflow itself: KFP v1's pipeline spec annotation, else generateName."""
    spec = argo.annotations_of(workflow).get(argo.PIPELINE_SPEC_ANNOTATION)
    if spec:
        try:
            name = json.loads(spec).get("name")
        except (ValueError, AttributeError):
            name = None
        if name:
            return str(name)
    meta = argo.metadata(workflow)
    return (meta.get("generateName") or meta.get("name") or "pipeline").rstrip("-")


def timestamp(value: str | None) -> datetime:
    """An RFC 3339 time as Kubernetes writes it (``2020-09-08T08:19:12Z``); now when it is missing."""
    if not value:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
