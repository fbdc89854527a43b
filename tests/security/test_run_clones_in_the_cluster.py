"""``rok clone-pvc``, a run's ``create-volume-N`` task, in a cluster: it finds the run's initial version through
the registry's HTTP API with its pod's service account token, and asks for a restore of the notebook's volume into
a new PVC of the run, labelled with the run's id (never over the bus, which a task pod cannot reach).

The restorer here has no Kubernetes side, so the clone ends there, saying so; tests/deploy/test_cluster_flow.py
makes the clone in the fake cluster and checks the claim.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rokcli.clones import clone_name
from rokcommon import streams, subjects
from rokcommon.events import PvcTarget, RestoreRequested

from .stage import TEAM_A, Stage, rok

pytestmark = pytest.mark.asyncio(loop_scope="module")


def task_pod(stage: Stage) -> dict[str, str]:
    token = stage.kube.tokens.service_account(TEAM_A, "default-editor")
    return {"ROK_REGISTRY_URL": stage.web, "ROK_TOKEN": token, "ROK_NATS_URL": "nats://127.0.0.1:1"}


async def test_a_clone_task_restores_the_runs_initial_volume_into_a_pvc_labelled_with_the_run(
    stage: Stage, tmp_path: Path
) -> None:
    initial = next(v for v in stage.versions[TEAM_A] if v.phase == "initial")
    name_file = tmp_path / "outputs" / "name"
    args = ["clone-pvc", "workspace", "--run", initial.run_id, "--name-file", str(name_file), "--timeout", "5"]

    code, out, err = await asyncio.to_thread(rok, {**task_pod(stage), "ROK_NAMESPACE": TEAM_A}, *args)

    assert code == 1 and "needs the restorer's Kubernetes side" in err, (out, err)
    assert not name_file.exists()  # no PVC, no name for the steps to mount
    found = await stage.js.get_last_msg(streams.RESTORES.name, subjects.RESTORE_REQUESTED)
    request = RestoreRequested.decode(found.data)
    assert request.url == initial.members[0].url  # the notebook's volume, as the run's initial version holds it
    assert request.requested_by == f"system:serviceaccount:{TEAM_A}:default-editor"
    assert request.target == PvcTarget(
        namespace=TEAM_A, name=clone_name("workspace", initial.run_id), run_id=initial.run_id
    )


async def test_a_clone_task_names_the_volume_the_initial_version_lacks(stage: Stage, tmp_path: Path) -> None:
    initial = next(v for v in stage.versions[TEAM_A] if v.phase == "initial")
    args = ["clone-pvc", "datasets", "--run", initial.run_id, "--name-file", str(tmp_path / "n"), "--timeout", "5"]

    code, out, err = await asyncio.to_thread(rok, {**task_pod(stage), "ROK_NAMESPACE": TEAM_A}, *args)

    assert code == 1, (out, err)
    assert f"the initial version of run {initial.run_id} holds no volume datasets; it holds: workspace" in err


async def test_clone_names_are_dns_labels_that_name_volume_and_run() -> None:
    assert clone_name("my-notebook-workspace", "0c9e4f2a-77b1-4d3e-9a4f-5b6c7d8e9f00") == (
        "my-notebook-workspace-run-0c9e4f2a77b1"
    )
    long = clone_name("A_Very_Long_Claim_Name_" * 4, "RUN")
    assert len(long) <= 63 and long.endswith("-run-run") and long == long.lower()
