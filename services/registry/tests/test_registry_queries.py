"""The query layer: lists, versions, resolving URLs, finding a step's version, search — within one namespace."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from registry_testkit import RunScript
from rok_registry.api import create_app
from rok_registry.database import Database
from rok_registry.gate import Gate
from rok_registry.handlers import reply
from rok_registry.http_server import HttpServer
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rokcommon.authz import LocalAccess
from rokcommon.errors import Forbidden, InvalidRequest, NotFound, TemporaryError
from rokcommon.events import Event, SnapshotCompleted
from rokcommon.registry_contract import Lineage, ListBuckets, raise_error
from rokcommon.urls import InvalidUrl, format_url, parse_url
from roktesting.ports import free_port


async def record(recorder: Recorder, events: list[Event]) -> None:
    for event in events:
        await recorder.record(event)


@pytest.fixture
async def lineage(recorder: Recorder, queries: Queries) -> Lineage:
    """Run wf-1 in team-a, and wf-9 in team-b."""
    await record(recorder, RunScript("wf-1").events())
    await record(recorder, RunScript("wf-9", namespace="team-b", experiment="Secret").events())
    [bucket] = await queries.list_buckets("team-a")
    [run] = await queries.list_files("team-a", bucket.name)
    return await queries.lineage("team-a", bucket.name, run.name)


async def test_lists_show_the_namespaces_buckets_runs_and_versions_in_order(lineage: Lineage, queries: Queries) -> None:
    [bucket] = await queries.list_buckets("team-a")
    assert (bucket.experiment, bucket.files) == ("Churn Model", 1)
    assert bucket.url == f"rok://team-a/{bucket.name}"
    [run] = await queries.list_files("team-a", bucket.name)
    assert (run.workflow_uid, run.versions, run.status) == ("wf-1", 7, "succeeded")
    versions = await queries.list_versions("team-a", bucket.name, run.name)
    assert [(v.step_name, v.phase) for v in versions] == [
        (None, "initial"),
        ("prepare", "before"),
        ("prepare", "after"),
        ("train", "before"),
        ("train", "after"),
        ("evaluate", "before"),
        ("evaluate", "after"),
    ]
    assert [b.experiment for b in await queries.list_buckets("team-b")] == ["Secret"]
    assert await queries.list_buckets("team-c") == []


async def test_resolving_a_version_url_gives_every_member_workspace_first(lineage: Lineage, queries: Queries) -> None:
    version = lineage.steps[1].after
    resolved = await queries.resolve("team-a", version.url)
    assert resolved.version == version
    assert [(m.volume, m.role, m.snapshot_id) for m in resolved.members] == [
        ("workspace", "workspace", "snap-wf-1-train-after-workspace"),
        ("data", "data", "snap-wf-1-train-after-data"),
    ]
    assert await queries.get_version("team-a", version.url) == version


async def test_resolving_a_volume_url_gives_that_volume_only(lineage: Lineage, queries: Queries) -> None:
    url = f"{lineage.steps[0].before.url}&volume=data"
    resolved = await queries.resolve("team-a", url)
    assert [m.snapshot_id for m in resolved.members] == ["snap-wf-1-prepare-before-data"]
    assert resolved.url == url

    with pytest.raises(NotFound, match=r"has no volume 'scratch'; it has workspace, data"):
        await queries.resolve("team-a", f"{lineage.steps[0].before.url}&volume=scratch")


async def test_another_namespaces_version_is_refused_with_a_clear_error(lineage: Lineage, queries: Queries) -> None:
    url = lineage.steps[0].after.url
    with pytest.raises(Forbidden, match=r"belongs to namespace 'team-a'; you are asking from namespace 'team-b'"):
        await queries.resolve("team-b", url)
    with pytest.raises(Forbidden):
        await queries.get_version("team-b", url)

    # the other namespace's version id under one's own namespace is refused too
    [theirs] = await queries.list_buckets("team-b")
    [their_run] = await queries.list_files("team-b", theirs.name)
    their_version = (await queries.list_versions("team-b", theirs.name, their_run.name))[0]
    forged = format_url("team-a", lineage.file.bucket, lineage.file.name, their_version.id)
    # as unknown as an id that does not exist: the answer reveals nothing of the other namespace
    with pytest.raises(NotFound, match=f"no version '{their_version.id}' in namespace 'team-a'"):
        await queries.resolve("team-a", forged)
    assert await queries.find_version("team-a", "wf-9", None, "initial") is None


async def test_unknown_and_malformed_urls_say_what_is_wrong(lineage: Lineage, queries: Queries) -> None:
    file_url = lineage.file.url
    with pytest.raises(NotFound, match="no version 'zzzzzzzzzz'"):
        await queries.resolve("team-a", f"{file_url}?version=zzzzzzzzzz")
    with pytest.raises(InvalidRequest, match="names no version"):
        await queries.resolve("team-a", file_url)
    with pytest.raises(InvalidUrl, match="must start with rok://"):
        await queries.resolve("team-a", "s3://bucket/key")
    moved = format_url("team-a", lineage.file.bucket, "other-run", lineage.initial.id)
    with pytest.raises(NotFound, match=f"is not in {lineage.file.bucket}/other-run: it is "):
        await queries.resolve("team-a", moved)
    with pytest.raises(NotFound, match="no bucket 'nope' in namespace 'team-a'"):
        await queries.list_files("team-a", "nope")
    with pytest.raises(NotFound, match="no run 'nope'"):
        await queries.lineage("team-a", lineage.file.bucket, "nope")


async def test_finding_a_steps_version_by_workflow_uid_shows_when_it_is_committed(
    recorder: Recorder, queries: Queries
) -> None:
    script = RunScript()
    events = script.events()
    step_id = script.step("train").step_id
    assert await queries.find_version("team-a", "wf-1", step_id, "before") is None

    train_before = [e for e in events if isinstance(e, SnapshotCompleted) and e.step and e.step.name == "train"][:2]
    await record(recorder, [events[0], train_before[0]])
    pending = await queries.find_version("team-a", "wf-1", step_id, "before")
    assert pending is not None and pending.status == "pending" and not pending.committed

    await record(recorder, [train_before[1]])
    done = await queries.find_version("team-a", "wf-1", step_id, "before")
    assert done is not None and done.committed and done.status == "complete"
    assert await queries.find_version("team-a", "wf-1", step_id, "after") is None
    assert await queries.find_version("team-a", "wf-1", step_id, "before", attempt=1) is None

    await record(recorder, events)
    initial = await queries.find_version("team-a", "wf-1", None, "initial")
    assert initial is not None and initial.tags == ("initial",)


async def test_search_finds_buckets_runs_versions_and_urls(lineage: Lineage, queries: Queries) -> None:
    by_experiment = await queries.search("team-a", "churn")
    assert [(h.kind, h.bucket) for h in by_experiment] == [("bucket", lineage.file.bucket)]
    by_run_name = await queries.search("team-a", "NIGHTLY")
    assert [(h.kind, h.file) for h in by_run_name] == [("file", lineage.file.name)]
    version = lineage.steps[2].after
    [by_id] = await queries.search("team-a", version.id)
    assert (by_id.kind, by_id.url, by_id.title) == ("version", version.url, f"{lineage.file.name}: evaluate (after)")
    [by_url] = await queries.search("team-a", version.url)
    assert by_url == by_id
    assert await queries.search("team-a", "secret") == []  # team-b's experiment
    assert await queries.search("team-a", "nightly_training") == []  # '_' is not a wildcard
    assert await queries.search("team-a", "%") == []
    with pytest.raises(Forbidden):
        await queries.search("team-b", version.url)


def test_urls_round_trip_and_malformed_ones_are_refused_with_the_reason() -> None:
    url = "rok://team-a/churn-3mis2/nightly-3mis2-ab12?version=k3x9q2mf7z&volume=data.v_1"
    parsed = parse_url(url)
    assert (parsed.namespace, parsed.bucket, parsed.file, parsed.version, parsed.volume) == (
        "team-a",
        "churn-3mis2",
        "nightly-3mis2-ab12",
        "k3x9q2mf7z",
        "data.v_1",
    )
    assert str(parsed) == url
    assert parsed.version_url == url.split("&")[0]
    assert str(parse_url("rok://team-a/churn-3mis2")) == "rok://team-a/churn-3mis2"
    for bad, reason in [
        ("http://team-a/b/c?version=abcd", "must start with rok://"),
        ("rok://Team_A/b", "namespace 'Team_A'"),
        ("rok://team-a/b/c/d", "expected /<bucket> or /<bucket>/<file>"),
        ("rok://team-a/b?version=abcd", "a version belongs to a file"),
        ("rok://team-a/b/c?volume=data", "volume= needs version="),
        ("rok://team-a/b/c?version=AB", "is not a version id"),
        ("rok://team-a/b/c?version=abcd&colour=red", "unknown parameter(s) colour"),
        ("rok://team-a/b/c?version=abcd&version=efgh", "version is given 2 times"),
        ("rok://team-a/B/c", "bucket 'B'"),
        ("", "empty URL"),
    ]:
        with pytest.raises(InvalidUrl) as caught:
            parse_url(bad)
        assert reason in str(caught.value), bad


async def test_a_registry_whose_database_is_down_answers_unavailable_on_nats_and_503_on_http() -> None:
    down = Database(f"postgresql://rok@127.0.0.1:{free_port()}/rok")
    http = HttpServer(create_app(Queries(down), gate=Gate(LocalAccess("t"))), "127.0.0.1", 0)
    await http.start()
    try:
        answer = await reply(Queries(down), ListBuckets, b'{"namespace": "team-a"}')
        status, body = await asyncio.to_thread(http_get, f"{http.url}/api/v1/namespaces/team-a/buckets", "t")
    finally:
        await http.stop()
        await down.close()
    assert answer.error is not None and answer.error.kind == "unavailable"
    assert "the registry database is unavailable" in answer.error.message
    with pytest.raises(TemporaryError, match="database is unavailable"):
        raise_error(answer.error)
    assert status == 503 and body["error"]["kind"] == "unavailable"


def http_get(url: str, token: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
