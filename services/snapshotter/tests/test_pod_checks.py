"""The rules that tie a pod to a run and a step, over the objects as the API server sends them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cluster_helpers import OBJECTS, RUN_ID
from rok_snapshotter.pod_checks import check_step, owned_by_run
from rok_snapshotter.volumes import VolumeRefused
from rokcommon.events import RunRef, StepRef, VolumeRef

WORKFLOW_UID = OBJECTS["workflow"]["metadata"]["uid"]
RUN = RunRef(namespace="kubeflow-user-example-com", run_id=RUN_ID, workflow_uid=WORKFLOW_UID)
VOLUME = VolumeRef(name="ws", path="/x")


def step_pod() -> dict[str, Any]:
    return copy.deepcopy(OBJECTS["pods"][0])


def v1_pod(node_id: str) -> dict[str, Any]:
    """A KFP v1 step pod as Argo before 3.4 made it: named for its workflow node, without the node-id annotation."""
    pod = step_pod()
    del pod["metadata"]["annotations"]["workflows.argoproj.io/node-id"]
    pod["metadata"]["name"] = node_id
    return pod


def test_a_pod_argo_made_for_the_runs_workflow_is_the_runs() -> None:
    assert owned_by_run(step_pod(), RUN)


def test_a_pod_whose_run_id_label_names_another_run_is_not_the_runs_even_if_owned_by_its_workflow() -> None:
    pod = step_pod()
    pod["metadata"]["labels"]["pipeline/runid"] = "another-run"
    assert not owned_by_run(pod, RUN)


def test_a_pod_owned_by_another_workflow_or_by_none_is_not_the_runs() -> None:
    other = RunRef(namespace=RUN.namespace, run_id=RUN_ID, workflow_uid="another-workflow-uid")
    assert not owned_by_run(step_pod(), other)
    orphan = step_pod()
    orphan["metadata"]["ownerReferences"] = []
    assert not owned_by_run(orphan, RUN)


def test_a_kfp_v1_pod_runs_the_step_named_for_it() -> None:
    check_step(v1_pod("retry-random-failures-p9snt-3292940923"), VOLUME, step("retry-random-failures-p9snt-3292940923"))
    with pytest.raises(VolumeRefused, match="runs workflow node retry-random-failures-p9snt-1, not step"):
        check_step(v1_pod("retry-random-failures-p9snt-1"), VOLUME, step("retry-random-failures-p9snt-3292940923"))


def step(step_id: str) -> StepRef:
    return StepRef(run=RUN, step_id=step_id, name="random-failure")
