"""Event models and subjects: what a consumer can rely on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from rokcommon import subjects
from rokcommon.errors import InvalidEvent, UnsupportedSchemaVersion
from rokcommon.events import (
    EVENT_TYPES,
    DirectoryTarget,
    RestoreRequested,
    RunRef,
    SnapshotCompleted,
    SnapshotStatsModel,
    StepFinished,
    StepRef,
    StepStarted,
    VolumeRef,
    model_for_subject,
)

RUN = RunRef(namespace="team-a", run_id="run-1", workflow_uid="wf-1")
STEP = StepRef(run=RUN, step_id="wf-1-123", name="train")
WORKSPACE = VolumeRef(name="workspace", role="workspace", path="/vol/ws")
DATA = VolumeRef(name="data", path="/vol/data")


def started(node: str = "ip-10-0-0-12.ec2.internal", **kw: object) -> StepStarted:
    fields = {"step": STEP, "node": node, "volumes": (WORKSPACE, DATA), "started_at": datetime.now(UTC)}
    return StepStarted.make(**(fields | kw))


def test_a_node_name_with_dots_becomes_one_subject_token() -> None:
    assert subjects.node_token("ip-10-0-0-12.ec2.internal") == "ip-10-0-0-12_ec2_internal"
    assert subjects.node_name("ip-10-0-0-12_ec2_internal") == "ip-10-0-0-12.ec2.internal"
    assert started().subject_for() == "rok.step.started.v1.ip-10-0-0-12_ec2_internal"


def test_a_node_filter_matches_the_run_and_step_events_of_that_node_only() -> None:
    from rokcommon.streams import _matches

    pattern = subjects.node_filter("n1.example")
    assert _matches(pattern, "rok.step.started.v1.n1_example")
    assert _matches(pattern, "rok.step.finished.v1.n1_example")
    assert _matches(pattern, "rok.run.started.v1.n1_example")
    assert not _matches(pattern, "rok.step.started.v1.n2_example")
    assert not _matches(pattern, "rok.run.finished.v1")


@pytest.mark.parametrize("bad", ["Upper.case", "under_score", "-dash", "", "a" * 254])
def test_an_invalid_node_name_is_refused_with_its_value(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid node name"):
        subjects.node_token(bad)


def test_the_same_fact_gets_the_same_event_id_and_another_fact_another() -> None:
    a, b = started(), started()
    assert a.event_id == b.event_id
    assert a.occurred_at <= b.occurred_at
    finished = StepFinished.make(
        step=STEP, node="n", volumes=(WORKSPACE,), outcome="failed", finished_at=datetime.now(UTC)
    )
    assert finished.event_id != a.event_id
    retry = started(step=STEP.model_copy(update={"step_id": "wf-1-456", "attempt": 1}))
    assert retry.event_id != a.event_id


def test_events_are_frozen_and_forbid_unknown_fields() -> None:
    event = started()
    with pytest.raises(ValidationError):
        event.node = "other"  # type: ignore[misc]
    payload = event.model_dump_json().replace('"guarded"', '"colour":"red","guarded"')
    with pytest.raises(InvalidEvent, match="colour"):
        StepStarted.decode(payload)


def test_an_unknown_schema_version_is_its_own_error() -> None:
    payload = started().model_dump_json().replace('"schema_version":1', '"schema_version":2')
    with pytest.raises(UnsupportedSchemaVersion, match="schema_version 2 is not supported"):
        StepStarted.decode(payload)


def test_occurred_at_must_carry_a_timezone() -> None:
    payload = started().model_dump_json()
    naive = __import__("re").sub(r'"occurred_at":"[^"]+"', '"occurred_at":"2026-01-01T00:00:00"', payload)
    with pytest.raises(InvalidEvent, match="occurred_at"):
        StepStarted.decode(naive)


def test_the_workspace_volume_must_come_first_and_names_be_unique() -> None:
    with pytest.raises(ValidationError, match="workspace volume must come first"):
        started(volumes=(DATA, WORKSPACE))
    with pytest.raises(ValidationError, match="must be unique"):
        started(volumes=(WORKSPACE, WORKSPACE))


def test_a_volume_needs_an_absolute_path_or_a_pod_location() -> None:
    with pytest.raises(ValidationError, match="must be absolute"):
        VolumeRef(name="v", path="relative/dir")
    with pytest.raises(ValidationError, match="needs a path, or a pod_uid and pod_volume"):
        VolumeRef(name="v")
    in_cluster = VolumeRef(name="v", pvc="claim", pv="pvc-123", pod_uid="uid", pod_volume="vol")
    assert in_cluster.cache_key == "pvc-123"


def test_every_subject_carries_exactly_one_model() -> None:
    assert len({m.subject for m in EVENT_TYPES}) == len(EVENT_TYPES)
    for model in EVENT_TYPES:
        assert model_for_subject(model.subject) is model
    assert model_for_subject("rok.step.started.v1.node_a") is StepStarted
    with pytest.raises(InvalidEvent, match="no event is published"):
        model_for_subject("rok.nothing.here.v1")


def test_snapshot_events_of_different_volumes_have_different_ids() -> None:
    fields = dict(
        run=RUN,
        step=STEP,
        phase="before",
        volumes=("workspace", "data"),
        repository="file:///r",
        snapshot_id="ab" * 32,
        stats=SnapshotStatsModel(),
        node="n",
        taken_at=datetime.now(UTC),
    )
    a = SnapshotCompleted.make(volume=WORKSPACE, **fields)
    b = SnapshotCompleted.make(volume=DATA, **fields)
    assert a.event_id != b.event_id


def test_a_restore_target_must_be_absolute() -> None:
    with pytest.raises(ValidationError, match="must be absolute"):
        RestoreRequested.make(request_id="r1", namespace="ns", url="rok://x", target={"kind": "directory", "path": "x"})
    request = RestoreRequested.make(
        request_id="r1", namespace="ns", url="rok://x", target={"kind": "directory", "path": "/x"}
    )
    assert isinstance(request.target, DirectoryTarget)


def test_kubernetes_targets_need_names_kubernetes_accepts() -> None:
    from rokcommon.events import NotebookTarget, PvcTarget

    with pytest.raises(ValidationError, match="PVC name 'Data_1' must be a DNS label of at most 63"):
        PvcTarget(namespace="ns", name="Data_1")
    with pytest.raises(ValidationError, match=r"notebook name .* at most 53"):
        NotebookTarget(namespace="ns", name="n" * 54)
    assert NotebookTarget(namespace="ns", name="n" * 53).name == "n" * 53
    assert PvcTarget(namespace="ns", name="restored-data-1").name == "restored-data-1"
