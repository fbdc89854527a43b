"""The translator turns Argo workflow state (KFP v1 and v2 layouts) into run and step events."""

from __future__ import annotations

import copy

from rok_pipeline_watcher.translator import RunInfo, RunState, Translator
from rokcommon.events import RunFinished, RunStarted, StepFinished, StepStarted
from rokcommon.versions import VersionKey


def translate(run, **kwargs):
    return Translator().translate(RunState(run.workflow, run.pods, **kwargs))


def steps(events, kind=StepStarted):
    return [(e.step.name, e.step.attempt) for e in events if isinstance(e, kind)]


def test_a_finished_kfp_v1_run_yields_run_started_then_each_step_started_and_finished_then_run_finished(
    v1_run,
):
    events = translate(v1_run)

    assert isinstance(events[0], RunStarted)
    assert isinstance(events[-1], RunFinished)
    assert events[-1].outcome == "succeeded"
    assert steps(events) == [
        ("print-msg", 0),
        ("random-failure", 0),
        ("random-failure", 1),
        ("print-msg-2", 0),
    ]
    assert steps(events, StepFinished) == steps(events)
    assert events[0].run.run_id == "2f9a3d50-454c-4979-be8d-f222bc245bc1"
    assert events[0].run_name == "Run of retry (835b8)"
    assert events[0].pipeline_name == "Retry random failures"


def test_each_retry_attempt_is_a_step_of_its_own_carrying_its_attempt_number_and_outcome(v1_run):
    events = translate(v1_run)

    finished = {e.step.attempt: e for e in events if isinstance(e, StepFinished) and e.step.name == "random-failure"}
    assert finished[0].outcome == "failed"
    assert finished[1].outcome == "succeeded"
    assert finished[0].step.step_id == v1_run.node("random-failure(0)")["id"]
    assert finished[1].step.step_id == v1_run.node("random-failure(1)")["id"]


def test_kfp_v2_steps_are_named_for_their_task_and_driver_pods_are_not_steps(v2_run, notebook_pod):
    for name in (".make-data-driver", ".train-driver", ".root-driver"):  # even were they to mount the workspace
        spec = v2_run.pod(name)["spec"]
        spec["volumes"].append({"name": "ws", "persistentVolumeClaim": {"claimName": "ws-nb-1-run-8xfss"}})
        spec["containers"][1]["volumeMounts"].append({"name": "ws", "mountPath": "/ws"})

    events = translate(v2_run, notebook_pod=notebook_pod)

    assert steps(events) == [("make-data", 0), ("train", 0)]
    started = [e for e in events if isinstance(e, StepStarted)]
    assert started[0].step.step_id == v2_run.node(".make-data.executor")["id"]
    assert started[1].node == "ip-10-0-2-33.ec2.internal"
    assert started[1].subject_for() == "rok.step.started.v1.ip-10-0-2-33_ec2_internal"


def test_a_kfp_v2_cache_hit_takes_no_snapshot(v2_run, notebook_pod):
    assert v2_run.node(".evaluate.executor")["phase"] == "Skipped"

    events = translate(v2_run, notebook_pod=notebook_pod)

    assert not [e for e in events if getattr(e, "step", None) and e.step.name == "evaluate"]


def test_a_kfp_v1_pod_reused_from_the_cache_takes_no_snapshot(v1_run):
    v1_run.pod("print-msg-2")["metadata"]["labels"]["pipelines.kubeflow.org/reused_from_cache"] = "true"

    assert ("print-msg-2", 0) not in steps(translate(v1_run))


def test_skipped_and_omitted_nodes_take_no_snapshot(v1_run):
    v1_run.node("print-msg-2")["phase"] = "Omitted"
    v1_run.node("print-msg")["phase"] = "Skipped"

    assert steps(translate(v1_run)) == [("random-failure", 0), ("random-failure", 1)]


def test_the_workspace_named_by_the_workflow_comes_first_whatever_the_order_of_the_pod_volumes(v2_run, notebook_pod):
    pod = v2_run.pod(".train.executor")
    events = translate(v2_run, notebook_pod=notebook_pod, claims={"ws-nb-1-run-8xfss": "pvc-0a1b2c3d"})

    (train,) = [e for e in events if isinstance(e, StepStarted) and e.step.name == "train"]
    workspace, data = train.volumes
    assert (workspace.name, workspace.role, workspace.pv) == (
        "ws-nb-1-run-8xfss",
        "workspace",
        "pvc-0a1b2c3d",
    )
    assert (workspace.pod_uid, workspace.pod_name, workspace.pod_volume) == (
        pod["metadata"]["uid"],
        pod["metadata"]["name"],
        "pvc-ws",
    )
    assert (data.name, data.role, data.pvc, data.pod_volume) == (
        "data-nb-1-run-8xfss",
        "data",
        "data-nb-1-run-8xfss",
        "pvc-data",
    )


def test_without_a_workspace_annotation_the_first_mounted_claim_is_the_workspace(v1_run):
    started = translate(v1_run)[1]

    assert [(v.name, v.role) for v in started.volumes] == [
        ("retry-random-failures-p9snt-workspace", "workspace"),
        ("retry-random-failures-p9snt-data", "data"),
    ]


def test_a_run_named_for_its_notebook_starts_from_the_notebook_volumes_on_the_notebook_node(v2_run, notebook_pod):
    started = translate(v2_run, notebook_pod=notebook_pod, info=RunInfo("ml-pipeline", "v3", "churn"))[0]

    assert isinstance(started, RunStarted)
    assert [v.name for v in started.volumes] == ["workspace-nb-1", "data-nb-1"]
    assert started.node == notebook_pod["spec"]["nodeName"]
    assert {(v.pod_name, v.pod_uid) for v in started.volumes} == {("nb-1-0", notebook_pod["metadata"]["uid"])}
    assert (started.pipeline_name, started.pipeline_version, started.experiment) == (
        "ml-pipeline",
        "v3",
        "churn",
    )


def test_feeding_the_same_state_twice_emits_nothing_new(v1_run):
    translator = Translator()
    first = translator.translate(RunState(v1_run.workflow, v1_run.pods))

    assert first
    assert translator.translate(RunState(v1_run.workflow, v1_run.pods)) == []


def test_a_restarted_translator_emits_the_same_event_ids_derived_from_workflow_uid_node_id_and_phase(v1_run):
    first = Translator().translate(RunState(v1_run.workflow, v1_run.pods))
    again = Translator().translate(RunState(v1_run.workflow, v1_run.pods))

    assert [e.event_id for e in first] == [e.event_id for e in again]
    step = next(e for e in first if isinstance(e, StepFinished))
    key = VersionKey.of_step(v1_run.workflow["metadata"]["uid"], step.step.step_id, step.step.attempt, "after")
    assert step.event_id == key.event_id("step finished")


def test_a_step_starts_when_its_pod_is_bound_and_finishes_when_its_node_is_done(v1_run):
    run = v1_run.copy()
    run.workflow["status"].update(phase="Running", finishedAt=None)
    node = run.node("print-msg")
    node.update(phase="Pending", finishedAt=None)
    for other in run.workflow["status"]["nodes"].values():
        if other["type"] == "Pod" and other is not node:
            run.pods.pop(other["id"])
    pod = run.pod("print-msg")
    del pod["spec"]["nodeName"]
    pod["status"] = {"phase": "Pending"}
    node.pop("hostNodeName")
    translator = Translator()

    assert translator.translate(RunState(run.workflow, run.pods)) == []  # not scheduled yet: nothing to snapshot

    pod["spec"]["nodeName"] = "ip-10-0-1-17.ec2.internal"
    pending = translator.translate(RunState(run.workflow, run.pods))
    assert [type(e) for e in pending] == [RunStarted, StepStarted]

    node["phase"] = "Running"
    assert translator.translate(RunState(run.workflow, run.pods)) == []

    node.update(phase="Succeeded", finishedAt="2020-09-08T08:19:14Z")
    (finished,) = translator.translate(RunState(run.workflow, run.pods))
    assert isinstance(finished, StepFinished)
    assert finished.outcome == "succeeded"


def test_a_guarded_step_finishes_when_its_main_container_ends_while_its_pod_still_runs(v2_run, notebook_pod):
    node = v2_run.node(".train.executor")
    node.update(phase="Running", finishedAt=None)
    pod = v2_run.pod(".train.executor")
    pod["spec"]["initContainers"].insert(0, {"name": "rok-guard", "image": "rok", "restartPolicy": "Always"})
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] = 1

    events = translate(v2_run, notebook_pod=notebook_pod)

    (finished,) = [e for e in events if isinstance(e, StepFinished) and e.step.name == "train"]
    assert finished.outcome == "failed"
    assert finished.guarded is True


def test_the_step_node_comes_from_the_pod_and_else_from_the_workflow_node(v1_run):
    v1_run.pod("print-msg")["spec"]["nodeName"] = "node-from-pod"
    del v1_run.pod("print-msg-2")["spec"]["nodeName"]

    nodes = {e.step.name: e.node for e in translate(v1_run) if isinstance(e, StepStarted)}

    assert nodes["print-msg"] == "node-from-pod"
    assert nodes["print-msg-2"] == v1_run.node("print-msg-2")["hostNodeName"]


def test_a_workflow_without_the_kfp_run_label_is_not_a_run(v1_run):
    del v1_run.workflow["metadata"]["labels"]["pipeline/runid"]

    assert translate(v1_run) == []


def test_a_failed_run_finishes_failed(v1_run):
    v1_run.workflow["status"]["phase"] = "Failed"

    assert translate(v1_run)[-1].outcome == "failed"


def test_a_finished_run_is_not_finished_before_every_step_pod_is_seen_unless_the_pods_are_known_complete(v1_run):
    v1_run.pods.pop(v1_run.node("print-msg-2")["id"])

    held = Translator().translate(RunState(v1_run.workflow, v1_run.pods, pods_complete=False))
    given_up = Translator().translate(RunState(v1_run.workflow, v1_run.pods, pods_complete=True))

    assert not any(isinstance(e, RunFinished) for e in held)
    assert isinstance(given_up[-1], RunFinished)


def test_kfp_v2_retries_make_one_step_per_executor_attempt_named_for_the_task(v2_run, notebook_pod):
    """KFP v2 with a retry policy: the task's DAG runs ``retry-system-container-executor``, whose ``executor``
    is a ``Retry`` node with one ``Pod`` child per attempt (``executor(0)``, ``executor(1)``)."""
    nodes = v2_run.workflow["status"]["nodes"]
    task, executor = v2_run.node(".train"), v2_run.node(".train.executor")
    pod = v2_run.pods.pop(executor["id"])
    task["templateName"] = "retry-system-container-executor"
    retry = {**executor, "type": "Retry", "templateName": "retry-system-container-impl", "children": []}
    del retry["hostNodeName"]
    nodes[executor["id"]] = retry
    for attempt, phase in ((0, "Failed"), (1, "Succeeded")):
        node_id = f"{executor['id']}{attempt}"
        nodes[node_id] = {
            **executor,
            "id": node_id,
            "name": f"{executor['name']}({attempt})",
            "displayName": f"executor({attempt})",
            "templateName": "retry-system-container-impl",
            "phase": phase,
        }
        retry["children"].append(node_id)
        attempt_pod = copy.deepcopy(pod)
        attempt_pod["metadata"]["annotations"]["workflows.argoproj.io/node-id"] = node_id
        v2_run.pods[node_id] = attempt_pod

    events = translate(v2_run, notebook_pod=notebook_pod)

    finished = [(e.step.name, e.step.attempt, e.outcome) for e in events if isinstance(e, StepFinished)]
    assert finished == [("make-data", 0, "succeeded"), ("train", 0, "failed"), ("train", 1, "succeeded")]
