"""Restores, asked over HTTP, over NATS and with the CLI: only from versions the asker may read, only into what
they may create; a forged request on the bus is refused by the restorer itself and dead-lettered with the reason."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path

import pytest
from nats.errors import Error as NatsError
from rokcommon import bus, permissions, streams, subjects
from rokcommon.events import DirectoryTarget, NotebookTarget, PvcTarget, RestoreFailed, RestoreRequested
from rokcommon.registry_contract import ListBuckets

from .stage import (
    ALICE,
    BOB,
    CAROL,
    TEAM_A,
    TEAM_B,
    Outcomes,
    Stage,
    as_user,
    dead_letters,
    eventually,
    http,
    rok,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# What a restore that passed every check ends in here: the restorer runs without its Kubernetes side, so it goes
# as far as choosing the target. A refusal says "refused" instead, and its message is dead-lettered.
REACHED_THE_TARGET = "needs the restorer's Kubernetes side"


async def restore(stage: Stage, user: str, body: dict[str, object], **headers: str) -> tuple[int, dict]:
    sent = {**as_user(user), "Content-Type": "application/json", "Origin": stage.web, **headers}
    answer = await http(f"{stage.web}/restores", method="POST", headers=sent, body=json.dumps(body).encode())
    return answer.status, answer.json() if answer.body.startswith("{") else {"body": answer.body}


async def test_the_api_restores_only_what_the_asker_may_read_into_what_they_may_create(
    stage: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    mine, theirs = stage.version(TEAM_A), stage.version(TEAM_B)
    pvc = {"kind": "pvc", "target": "restored"}
    refused = {
        "another namespace's version": (ALICE, {"url": theirs.url, **pvc, "namespace": TEAM_A}),
        "into another namespace": (ALICE, {"url": mine.url, **pvc, "namespace": TEAM_B}),
        "a viewer creating a PVC": (CAROL, {"url": mine.url, **pvc}),
        "a viewer creating a notebook": (CAROL, {"url": mine.url, "kind": "notebook", "target": "nb"}),
        "bob into alice's namespace": (BOB, {"url": mine.url, **pvc}),
    }
    for case, (user, body) in refused.items():
        status, answer = await restore(stage, user, body)
        assert status == 403, (case, answer)
        assert "may not" in answer["error"], case
    status, answer = await restore(stage, ALICE, {"url": mine.url, "target": "/etc/cron.d"})
    assert status == 400 and "never into a directory" in answer["error"]
    stored = await stage.js.stream_info(streams.RESTORES.name)
    assert stored.state.messages == 0  # none of them reached the bus

    with caplog.at_level(logging.INFO, logger="rok_registry.web.restores"):
        status, answer = await restore(stage, ALICE, {"url": mine.url, **pvc})
    assert status == 202, answer
    request_id = answer["request_id"]
    [line] = [r for r in caplog.records if getattr(r, "audit", None) == "restore"]
    assert (line.user, line.source, line.target, line.request_id) == (  # type: ignore[attr-defined]
        ALICE,
        mine.url,
        f"pvc:{TEAM_A}/restored",
        request_id,
    )
    progress = f"{stage.web}/restores/{request_id}"
    assert (await http(progress, headers=as_user(BOB))).status == 404  # another's restore is unknown to him
    reason = ""
    for _ in range(200):
        watched = (await http(progress, headers=as_user(ALICE))).json()
        if watched["state"] == "failed":
            reason = watched["reason"]
            break
        await asyncio.sleep(0.05)
    assert REACHED_THE_TARGET in reason  # the restorer's own checks let alice's request through
    assert request_id not in await dead_letters(stage.js)


async def test_a_state_changing_request_from_another_site_is_refused(stage: Stage) -> None:
    body = {"url": stage.version(TEAM_A).url, "kind": "pvc", "target": "cross-site"}
    cross_site = ({"Origin": "http://attacker.example"}, {"Origin": ""}, {"Origin": "", "Referer": "http://evil/x"})
    for headers in cross_site:
        status, _ = await restore(stage, ALICE, body, **headers)
        assert status == 403, headers
    before = (await stage.js.stream_info(streams.RESTORES.name)).state.messages
    status, _ = await restore(stage, ALICE, body)  # the same request from the registry's own pages
    assert status == 202
    assert (await stage.js.stream_info(streams.RESTORES.name)).state.messages == before + 1


async def test_a_forged_restore_request_on_the_bus_is_refused_by_the_restorer_and_dead_lettered(stage: Stage) -> None:
    outcomes = Outcomes()
    await outcomes.start(stage.admin)
    mine = stage.version(TEAM_A)
    sender = await stage.nats.connect(permissions.CLI)  # a component allowed to publish restore requests
    forged = {
        "bob, who may not read team-a": dict(requested_by=BOB, target=PvcTarget(namespace=TEAM_A, name="x1")),
        "nobody named": dict(requested_by=None, target=PvcTarget(namespace=TEAM_A, name="x2")),
        "into bob's namespace": dict(requested_by=ALICE, target=PvcTarget(namespace=TEAM_B, name="x3")),
        "a viewer's notebook": dict(requested_by=CAROL, target=NotebookTarget(namespace=TEAM_A, name="x4")),
        "a host directory": dict(requested_by=ALICE, target=DirectoryTarget(path="/var/lib/kubelet/pods")),
        "the wrong namespace claimed": dict(
            requested_by=BOB, target=PvcTarget(namespace=TEAM_B, name="x5"), namespace=TEAM_B
        ),
    }
    sent: dict[str, RestoreRequested] = {}
    try:
        for case, fields in forged.items():
            values: dict[str, object] = {"namespace": TEAM_A, "url": mine.url, **fields}
            event = RestoreRequested.make(request_id=uuid.uuid4().hex, **values)  # type: ignore[arg-type]
            await bus.publish(sender.jetstream(), event)
            sent[case] = event
        legit = RestoreRequested.make(
            request_id=uuid.uuid4().hex,
            namespace=TEAM_A,
            url=mine.url,
            target=PvcTarget(namespace=TEAM_A, name="fine"),
            requested_by=ALICE,
        )
        await bus.publish(sender.jetstream(), legit)
    finally:
        await sender.close()

    refusals = {case: await outcomes.of(event.request_id) for case, event in sent.items()}
    outcome = await outcomes.of(legit.request_id)
    assert isinstance(outcome, RestoreFailed) and REACHED_THE_TARGET in outcome.reason

    async def every_refusal_dead_lettered() -> dict:
        letters = await dead_letters(stage.js)  # a refusal's outcome is published, then its message dead-lettered
        return letters if all(event.request_id in letters for event in sent.values()) else {}

    letters = await eventually(every_refusal_dead_lettered)
    for case, refusal in refusals.items():
        request_id = sent[case].request_id
        assert isinstance(refusal, RestoreFailed), case
        assert refusal.reason.startswith(f"restore {request_id} refused: "), (case, refusal.reason)
        assert [m.headers[bus.DEAD_REASON] for m in letters.get(request_id, [])] == [refusal.reason], case
    assert legit.request_id not in letters
    assert stage.kube.list_objects(f"/api/v1/namespaces/{TEAM_A}/persistentvolumeclaims") == []


async def test_a_step_pod_can_neither_ask_the_registry_nor_request_a_restore_nor_forge_lineage(stage: Stage) -> None:
    guard = await stage.nats.connect(permissions.GUARD)  # the credentials every KFP step pod holds
    before = (await stage.js.stream_info(streams.RESTORES.name)).state.messages
    recorded = {
        s.name: (await stage.js.stream_info(s.name)).state.messages for s in (streams.PIPELINE, streams.SNAPSHOTS)
    }
    try:
        with pytest.raises((NatsError, TimeoutError)):
            await guard.request(
                subjects.registry_query("buckets"), ListBuckets(namespace=TEAM_A).model_dump_json().encode(), timeout=2
            )
        event = RestoreRequested.make(
            request_id="from-a-step",
            namespace=TEAM_A,
            url=stage.version(TEAM_A).url,
            target=PvcTarget(namespace=TEAM_B, name="stolen"),
            requested_by=ALICE,
        )
        with pytest.raises((NatsError, TimeoutError)):
            await guard.jetstream().publish(subjects.RESTORE_REQUESTED, event.model_dump_json().encode(), timeout=1)
        mine = stage.version(TEAM_A)
        with pytest.raises((NatsError, TimeoutError)):  # a full diff, answered by the restorer from the store
            await guard.request(subjects.STORE_DIFF, json.dumps({"a": mine.url, "b": mine.url}).encode(), timeout=1)
        # nor can it forge lineage: the events of a step's end or of a snapshot are not its to publish
        for event_subject in (f"{subjects.STEP_FINISHED}.node-a", subjects.SNAPSHOT_COMPLETED):
            with pytest.raises((NatsError, TimeoutError)):
                await guard.jetstream().publish(event_subject, b"{}", timeout=1)
    finally:
        await guard.close()
    assert (await stage.js.stream_info(streams.RESTORES.name)).state.messages == before
    assert {name: (await stage.js.stream_info(name)).state.messages for name in recorded} == recorded


async def test_the_cli_with_a_step_pods_credentials_reads_and_restores_nothing(stage: Stage, tmp_path: Path) -> None:
    env = {
        "ROK_NATS_URL": stage.nats.url,
        "ROK_NATS_USER": permissions.GUARD,
        "ROK_NATS_PASSWORD": stage.nats.passwords[permissions.GUARD],
        "ROK_NAMESPACE": TEAM_A,
        "ROK_STATE_DIR": str(tmp_path / "state"),
    }
    mine = stage.version(TEAM_A)
    before = (await stage.js.stream_info(streams.RESTORES.name)).state.messages
    # a registry query it may not publish goes unanswered (the query is the first thing a restore asks)
    code, out, err = await asyncio.to_thread(rok, env, "restore", mine.url, "--to", str(tmp_path / "t"), "--json")
    assert code == 75, (out, err)
    assert "alpha" not in out + err
    assert not (tmp_path / "t").exists()
    assert (await stage.js.stream_info(streams.RESTORES.name)).state.messages == before
