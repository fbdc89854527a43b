"""Restores people can reach in a cluster: ``rok restore --pvc/--notebook`` from a notebook pod, through the
registry's HTTP API (``POST /api/v1/restores``) with the pod's service account token — never the bus — checked at
the front door and again by the restorer."""

from __future__ import annotations

import asyncio
import json

import pytest
from rokcommon import streams, subjects
from rokcommon.events import NotebookTarget, PvcTarget, RestoreRequested

from .stage import ALICE, TEAM_A, TEAM_B, Stage, as_user, http, rok

pytestmark = pytest.mark.asyncio(loop_scope="module")

REACHED_THE_TARGET = "needs the restorer's Kubernetes side"  # this restorer runs without it: every check passed


async def last_request(stage: Stage) -> RestoreRequested:
    found = await stage.js.get_last_msg(streams.RESTORES.name, subjects.RESTORE_REQUESTED)
    return RestoreRequested.decode(found.data)


async def requests_made(stage: Stage) -> int:
    info = await stage.js.stream_info(streams.RESTORES.name, subjects_filter=subjects.RESTORE_REQUESTED)
    return (info.state.subjects or {}).get(subjects.RESTORE_REQUESTED, 0)


def notebook_pod(stage: Stage, account: str = "default-editor") -> dict[str, str]:
    """What ``rok`` sees in a notebook server of team-a: the registry's address and its service account token."""
    token = stage.kube.tokens.service_account(TEAM_A, account)
    return {"ROK_REGISTRY_URL": stage.web, "ROK_TOKEN": token, "ROK_NATS_URL": "nats://127.0.0.1:1"}


async def test_rok_restore_into_a_new_pvc_from_a_notebook_pod_goes_through_the_api(stage: Stage) -> None:
    url = stage.version(TEAM_A).url
    before = await requests_made(stage)

    code, out, err = await asyncio.to_thread(
        rok, notebook_pod(stage), "restore", url, "--pvc", "restored-data", "--size", "20Gi", "--json"
    )

    # every check let it through: the restorer went as far as the target (it has no Kubernetes side here)
    assert code == 1, (out, err)
    assert REACHED_THE_TARGET in err
    assert await requests_made(stage) == before + 1
    request = await last_request(stage)
    assert request.url == url and request.namespace == TEAM_A
    assert request.requested_by == f"system:serviceaccount:{TEAM_A}:default-editor"
    assert request.target == PvcTarget(namespace=TEAM_A, name="restored-data", size="20Gi")


async def test_rok_restore_as_a_new_notebook_server_carries_its_image_and_volume_sizes(stage: Stage) -> None:
    url = stage.version(TEAM_A).url
    args = ["--notebook", "back-again", "--image", "jupyter/torch:2", "--volume-size", "data=50Gi", "--json"]

    code, out, err = await asyncio.to_thread(rok, notebook_pod(stage), "restore", url, *args)

    assert code == 1 and REACHED_THE_TARGET in err, (out, err)
    request = await last_request(stage)
    assert request.target == NotebookTarget(
        namespace=TEAM_A, name="back-again", image="jupyter/torch:2", sizes={"data": "50Gi"}
    )


async def test_a_viewer_service_account_may_not_restore_and_the_cli_says_so(stage: Stage) -> None:
    url = stage.version(TEAM_A).url
    before = await requests_made(stage)

    code, out, err = await asyncio.to_thread(
        rok, notebook_pod(stage, "default-viewer"), "restore", url, "--pvc", "nope"
    )

    assert code == 4, (out, err)
    assert "may not restore into a new PVC" in err
    assert await requests_made(stage) == before


async def test_the_api_refuses_what_no_restore_can_be_and_answers_in_the_apis_shape(stage: Stage) -> None:
    url = stage.version(TEAM_A).url
    refused = {
        "a host directory": ({"url": url, "kind": "directory", "target": "/tmp/x"}, 400, "never into a directory"),
        "a size that is no quantity": ({"url": url, "kind": "pvc", "target": "p", "size": "lots"}, 400, "quantity"),
        "an access mode that is none": (
            {"url": url, "kind": "pvc", "target": "p", "access_mode": "ReadWriteSometimes"},
            400,
            "access_mode",
        ),
        "a PVC name that is no DNS label": ({"url": url, "kind": "pvc", "target": "My_PVC"}, 400, "DNS label"),
        "per-volume sizes for a PVC": ({"url": url, "kind": "pvc", "target": "p", "sizes": {"a": "1Gi"}}, 400, "one"),
        "another namespace": ({"url": url, "kind": "pvc", "target": "p", "namespace": TEAM_B}, 403, "may not"),
    }
    before = await requests_made(stage)
    for case, (body, status, says) in refused.items():
        answer = await http(
            f"{stage.web}/api/v1/restores",
            method="POST",
            headers={**as_user(ALICE), "Content-Type": "application/json", "Origin": stage.web},
            body=json.dumps(body).encode(),
        )
        assert answer.status == status, (case, answer.body)
        error = answer.json()["error"]
        assert says in error["message"], (case, error)
        assert error["kind"] == ("forbidden" if status == 403 else "invalid"), case
    assert await requests_made(stage) == before


async def test_a_restore_is_followed_by_its_id_by_the_one_who_asked(stage: Stage) -> None:
    body = {"url": stage.version(TEAM_A).url, "kind": "pvc", "target": "followed"}
    headers = {**as_user(ALICE), "Content-Type": "application/json", "Origin": stage.web}
    asked = await http(f"{stage.web}/api/v1/restores", method="POST", headers=headers, body=json.dumps(body).encode())
    assert asked.status == 202, asked.body
    request_id = asked.json()["request_id"]
    follow = f"{stage.web}/api/v1/restores/{request_id}"

    state = {}
    for _ in range(200):
        state = (await http(follow, headers=as_user(ALICE))).json()
        if state["state"] == "failed":
            break
        await asyncio.sleep(0.05)

    assert state["target"] == f"{TEAM_A}/followed"
    assert REACHED_THE_TARGET in state["reason"]
    stranger = await http(follow, headers=as_user("mallory@example.com"))
    assert stranger.status == 404 and stranger.json()["error"]["kind"] == "not_found"
