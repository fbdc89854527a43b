"""Every KFP v2 step is named for its task, whatever prefix the compiler gave its executor templates."""

from __future__ import annotations

import pytest
from kfp_variants import VARIANTS, with_train_compiled_as
from rok_pipeline_watcher import argo
from rok_pipeline_watcher.translator import RunState, Translator
from rokcommon.events import StepFinished, StepStarted


def finished_steps(run, notebook_pod):
    events = Translator().translate(RunState(run.workflow, run.pods, notebook_pod=notebook_pod))
    return [(e.step.name, e.step.attempt, e.outcome) for e in events if isinstance(e, StepFinished)], events


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_task_is_named_for_itself_whatever_its_executor_templates_are_called(variant, v2_run, notebook_pod):
    prefix, retried = VARIANTS[variant]
    run = with_train_compiled_as(v2_run, prefix, retried)

    finished, events = finished_steps(run, notebook_pod)

    train = [("train", 0, "failed"), ("train", 1, "succeeded")] if retried else [("train", 0, "succeeded")]
    assert finished == [("make-data", 0, "succeeded"), *train]
    assert not any(e.step.name.startswith("executor") for e in events if isinstance(e, StepStarted))


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_attempt_is_the_step_of_its_own_pod(variant, v2_run, notebook_pod):
    prefix, retried = VARIANTS[variant]
    run = with_train_compiled_as(v2_run, prefix, retried)

    _, events = finished_steps(run, notebook_pod)

    started = {e.step.step_id: e for e in events if isinstance(e, StepStarted) and e.step.name == "train"}
    pods = {
        argo.pod_node_id(p): p
        for p in run.pod_list
        if ".train.executor" in p["metadata"]["annotations"][argo.NODE_NAME_ANNOTATION]
    }
    assert all(f"-{prefix}system-container-impl-" in p["metadata"]["name"] for p in pods.values())
    assert set(started) == set(pods)
    for step_id, event in started.items():
        assert {v.pod_uid for v in event.volumes} == {pods[step_id]["metadata"]["uid"]}


@pytest.mark.parametrize(
    "template",
    [
        "system-container-impl",
        "retry-system-container-impl",
        "metadata-1-2-system-container-impl",
        "metadata-0-3-retry-system-container-impl",
        "train-model-system-container-impl",
    ],
)
def test_every_template_the_compiler_names_for_a_task_pod_runs_a_step(template):
    assert argo.is_v2_executor_impl(template)


@pytest.mark.parametrize(
    "template",
    [
        "system-container-driver",
        "system-dag-driver",
        "system-container-executor",
        "metadata-1-2-retry-system-container-executor",
        "system-container-impl-2",
        "mysystem-container-impl",
    ],
)
def test_drivers_executor_dags_and_look_alikes_are_not_task_pods(template):
    assert not argo.is_v2_executor_impl(template)
