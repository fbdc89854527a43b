"""Two users, two namespaces, the registry's HTTP API and pages: every cross-namespace read is refused, and
the refusal is the same whether or not what was asked for exists."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from .stage import ALICE, BOB, CAROL, HOST, TEAM_A, TEAM_B, Stage, as_user, http

pytestmark = pytest.mark.asyncio(loop_scope="module")


def reads(stage: Stage, namespace: str, *, bucket: str, file: str, version: str, url: str) -> list[str]:
    """Every read of the JSON API in ``namespace``."""
    api = stage.api(namespace)
    return [
        f"{api}/buckets",
        f"{api}/buckets/{bucket}/files",
        f"{api}/buckets/{bucket}/files/{file}/versions",
        f"{api}/buckets/{bucket}/files/{file}/versions/{version}",
        f"{api}/buckets/{bucket}/files/{file}/lineage",
        f"{api}/version?url={quote(url)}",
        f"{api}/resolve?url={quote(url)}",
        f"{api}/find?workflow_uid=wf-b&phase=initial",
        f"{api}/search?q=bravo",
    ]


async def test_without_identity_every_call_is_401_and_only_the_probes_answer(stage: Stage) -> None:
    for path in ("/api/v1/namespaces/team-a/buckets", "/", "/buckets/x", "/compare", "/search?q=a"):
        answer = await http(stage.web + path)
        assert answer.status == 401, path
    refused = await http(f"{stage.api(TEAM_A)}/buckets")
    assert refused.json()["error"]["kind"] == "unauthenticated"
    for path in ("/healthz", "/static/rok.css"):
        assert (await http(stage.web + path)).status == 200, path
    forged = {"Authorization": "Bearer not-a-token-the-api-server-issued"}
    assert (await http(f"{stage.api(TEAM_A)}/buckets", headers=forged)).status == 401
    empty = {"kubeflow-userid": ""}
    assert (await http(f"{stage.api(TEAM_A)}/buckets", headers=empty)).status == 401


async def test_every_read_of_another_namespace_is_403_alike_whether_it_exists_or_not(stage: Stage) -> None:
    theirs = stage.version(TEAM_B)
    existing = reads(stage, TEAM_B, bucket=theirs.bucket, file=theirs.file, version=theirs.id, url=theirs.url)
    made_up = reads(
        stage, TEAM_B, bucket="nope", file="nope", version="zzzz9999", url=f"rok://{TEAM_B}/nope/nope?version=zzzz9999"
    )
    nowhere = reads(
        stage, "team-z", bucket="nope", file="nope", version="zzzz9999", url="rok://team-z/nope/nope?version=zzzz9999"
    )
    answers = [await http(url, headers=as_user(ALICE)) for url in existing + made_up + nowhere]
    assert {a.status for a in answers} == {403}
    bodies = {a.body for a in answers[: len(existing) * 2]}
    assert len(bodies) == 1  # the very same answer for what exists and what does not
    assert "bravo" not in "".join(a.body for a in answers)
    assert answers[0].json()["error"] == {
        "kind": "forbidden",
        "message": f"{ALICE} may not read rok's lineage in namespace 'team-b' "
        "(it needs list persistentvolumeclaims there)",
    }
    # and bob reads his own, and carol (a viewer of team-a) hers
    for user, namespace in ((BOB, TEAM_B), (CAROL, TEAM_A), (ALICE, TEAM_A)):
        mine = stage.version(namespace)
        urls = reads(stage, namespace, bucket=mine.bucket, file=mine.file, version=mine.id, url=mine.url)
        statuses = [(await http(url, headers=as_user(user))).status for url in urls]
        assert statuses == [200] * len(urls), (user, statuses)


async def test_another_namespaces_url_or_version_id_asked_in_ones_own_reveals_nothing(stage: Stage) -> None:
    mine, theirs = stage.version(TEAM_A), stage.version(TEAM_B)
    alice = as_user(ALICE)
    made_up = f"rok://{TEAM_B}/nope/nope?version=zzzz9999"
    foreign_url = await http(f"{stage.api(TEAM_A)}/resolve?url={quote(theirs.url)}", headers=alice)
    made_up_url = await http(f"{stage.api(TEAM_A)}/resolve?url={quote(made_up)}", headers=alice)
    assert (foreign_url.status, made_up_url.status) == (403, 403)  # the URL's own namespace is not hers
    assert foreign_url.body.replace(theirs.url, "URL") == made_up_url.body.replace(made_up, "URL")
    # their version's id under her own run: as unknown as an id nobody ever made
    forged = f"{stage.api(TEAM_A)}/buckets/{mine.bucket}/files/{mine.file}/versions"
    their_id = await http(f"{forged}/{theirs.id}", headers=alice)
    no_id = await http(f"{forged}/zzzz9999", headers=alice)
    assert (their_id.status, no_id.status) == (404, 404)
    assert their_id.body.replace(theirs.id, "ID") == no_id.body.replace("zzzz9999", "ID")
    found = await http(f"{stage.api(TEAM_A)}/find?workflow_uid=wf-b&phase=initial", headers=alice)
    assert (found.status, found.json()) == (200, None)
    hits = await http(f"{stage.api(TEAM_A)}/search?q=bravo", headers=alice)
    assert (hits.status, hits.json()) == (200, [])


async def test_service_accounts_are_who_the_api_server_says_and_reach_their_namespace_only(stage: Stage) -> None:
    token = stage.kube.tokens.service_account(TEAM_B, "default-editor")
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await http(f"{stage.api(TEAM_B)}/buckets", headers=bearer)).status == 200
    assert (await http(f"{stage.api(TEAM_A)}/buckets", headers=bearer)).status == 403
    # the gateway's header comes first, as KFP takes it: the gateway may pass the person's own token along
    gateway = {**as_user(BOB), "Authorization": "Bearer an-id-token-the-api-server-does-not-know"}
    assert (await http(f"{stage.api(TEAM_B)}/buckets", headers=gateway)).status == 200
    assert (await http(f"{stage.api(TEAM_A)}/buckets", headers=gateway)).status == 403


async def test_pages_of_another_namespace_are_403_and_the_switcher_offers_only_ones_own(stage: Stage) -> None:
    theirs = stage.version(TEAM_B)
    alice = as_user(ALICE)
    pages = [
        "/?ns=team-b",
        f"/buckets/{theirs.bucket}?ns=team-b",
        f"/buckets/{theirs.bucket}/{theirs.file}?ns=team-b",
        f"/buckets/{theirs.bucket}/{theirs.file}/lineage?ns=team-b",
        "/search?q=bravo&ns=team-b",
        f"/compare?a={quote(theirs.url)}&b={quote(theirs.url)}&ns=team-b",
    ]
    for page in pages:
        answer = await http(stage.web + page, headers=alice)
        assert answer.status == 403, page
        assert "bravo" not in answer.body and theirs.id not in answer.body, page
    # the remembered namespace is checked as the chosen one is
    cookie = {**alice, "Cookie": "rok_ns=team-b"}
    assert (await http(stage.web + "/", headers=cookie)).status == 403
    # in her own namespace the same search and comparison show nothing of theirs
    search = await http(stage.web + "/search?q=bravo&ns=team-a", headers=alice)
    assert search.status == 200 and "bravo-" not in search.body  # the query is echoed; nothing of theirs found
    compare = await http(stage.web + f"/compare?a={quote(theirs.url)}&b={quote(theirs.url)}&ns=team-a", headers=alice)
    assert compare.status == 403 and "bravo-train" not in compare.body

    home = await http(stage.web + "/?ns=team-a", headers=alice)
    assert home.status == 200 and "alpha-secret-experiment" in home.body
    assert 'option value="team-a" selected' in home.body and 'value="team-b"' not in home.body
    bobs = await http(stage.web + "/?ns=team-b", headers=as_user(BOB))
    assert bobs.status == 200 and 'value="team-a"' not in bobs.body and "alpha" not in bobs.body
    assert "rok_ns=team-b" in bobs.headers.get("set-cookie", "")  # the choice is remembered
    # without a choice a page shows the first namespace one may read (the configured one is alice's)
    unchosen = await http(stage.web + "/", headers=as_user(BOB))
    assert unchosen.status == 200 and "bravo-secret-experiment" in unchosen.body and "alpha" not in unchosen.body
    # in a cluster the restore dialog offers a new PVC or notebook server, never a directory
    assert 'id="restore-kind"' in home.body and "Target directory" not in home.body


async def test_a_host_name_not_configured_is_refused_before_anything_else(stage: Stage) -> None:
    alice = as_user(ALICE)
    rebound = await http(f"{stage.api(TEAM_A)}/buckets", headers={**alice, "Host": "attacker.example"})
    assert rebound.status == 400
    configured = await http(f"{stage.api(TEAM_A)}/buckets", headers={**alice, "Host": HOST})
    assert configured.status == 200
    probe = await http(f"{stage.web}/healthz", headers={"Host": "10.1.2.3:8080"})  # the kubelet's probe
    assert probe.status == 200


async def test_a_bucket_is_named_for_whoever_may_start_a_run_and_answered_to_whoever_may_read(stage: Stage) -> None:
    url = f"{stage.api(TEAM_A)}/buckets?experiment=boundaries"

    def bearer(namespace: str, account: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {stage.kube.tokens.service_account(namespace, account)}"}

    viewer_first = await http(url, method="PUT", headers=bearer(TEAM_A, "default-viewer"))
    stranger = await http(url, method="PUT", headers=bearer(TEAM_B, "default-editor"))
    cross_site = await http(url, method="PUT", headers={**as_user(ALICE), "Origin": "http://attacker.example"})
    named = await http(url, method="PUT", headers=bearer(TEAM_A, "default-editor"))
    viewer_after = await http(url, method="PUT", headers=bearer(TEAM_A, "default-viewer"))
    stranger_after = await http(url, method="PUT", headers=bearer(TEAM_B, "default-editor"))

    assert (
        viewer_first.status == 403 and "create runs.pipelines.kubeflow.org" in viewer_first.json()["error"]["message"]
    )
    assert stranger.status == stranger_after.status == 403 and stranger.body == stranger_after.body
    assert cross_site.status == 403  # a browser's cookie or the gateway's header alone names no bucket
    assert named.status == 200 and named.json()["name"] == f"boundaries-{named.json()['suffix']}"
    assert (viewer_after.status, viewer_after.json()) == (200, named.json())
    listed = await http(f"{stage.api(TEAM_A)}/buckets", headers=as_user(CAROL))
    assert [b["name"] for b in listed.json()["items"] if b["experiment"] == "boundaries"] == [named.json()["name"]]
