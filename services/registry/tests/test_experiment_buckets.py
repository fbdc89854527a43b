"""``PUT /api/v1/namespaces/{ns}/buckets?experiment=NAME``: an experiment's bucket named on demand (``rok submit``
asks before it starts a run), once, whoever asks and however often; and an experiment named as a bucket
(``churn-ab3cd``, the KFP experiment ``rok submit`` creates) is that bucket when its runs are recorded."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from registry_testkit import RunScript
from rok_registry.api import create_app
from rok_registry.database import Database
from rok_registry.gate import Gate
from rok_registry.http_server import HttpServer
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rokcommon.authz import KubernetesAccess, LocalAccess
from rokcommon.registry_contract import ListBuckets, ListFiles
from roktesting.kubeflow import add_profile, install_profile_roles
from roktesting.kubernetes import FakeKube

TOKEN = "local-token"


@dataclass
class Registry:
    url: str
    recorder: Recorder
    queries: Queries

    def put(self, namespace: str, experiment: str, token: str = TOKEN) -> tuple[int, Any]:
        query = urllib.parse.urlencode({"experiment": experiment})
        request = urllib.request.Request(
            f"{self.url}/api/v1/namespaces/{namespace}/buckets?{query}",
            method="PUT",
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return int(answer.status), json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return int(error.code), json.loads(error.read())

    async def ask(self, namespace: str, experiment: str, token: str = TOKEN) -> tuple[int, Any]:
        return await asyncio.to_thread(self.put, namespace, experiment, token)


async def serve(database: Database, gate: Gate) -> AsyncIterator[Registry]:
    recorder, queries = Recorder(database), Queries(database)
    http = HttpServer(create_app(queries, gate=gate, recorder=recorder), "127.0.0.1", 0)
    await http.start()
    try:
        yield Registry(http.url, recorder, queries)
    finally:
        await http.stop()


@pytest.fixture
async def registry(database: Database) -> AsyncIterator[Registry]:
    async for served in serve(database, Gate(LocalAccess(TOKEN))):
        yield served


async def test_an_experiment_s_bucket_is_named_once_and_the_same_bucket_is_answered_after(registry: Registry) -> None:
    status, first = await registry.ask("team-a", "Churn Model")
    again_status, again = await registry.ask("team-a", "Churn Model")

    assert (status, again_status) == (200, 200)
    assert first == again
    suffix = first["suffix"]
    assert len(suffix) == 5 and suffix.isalnum() and suffix.islower()
    assert first["name"] == f"churn-model-{suffix}" and first["experiment"] == "Churn Model"
    assert first["url"] == f"rok://team-a/churn-model-{suffix}"
    listed = await registry.queries.buckets(ListBuckets(namespace="team-a"))
    assert [(b.name, b.suffix) for b in listed.items] == [(first["name"], suffix)]


async def test_the_bucket_a_run_s_first_event_named_is_the_one_answered(registry: Registry) -> None:
    run = RunScript("wf-early", experiment="churn", run_name="nightly")
    await registry.recorder.record(run.started())

    status, bucket = await registry.ask("team-a", "churn")

    (recorded,) = (await registry.queries.buckets(ListBuckets(namespace="team-a"))).items
    assert status == 200
    assert (bucket["name"], bucket["suffix"], bucket["files"]) == (recorded.name, recorded.suffix, 1)


async def test_a_run_whose_experiment_is_named_as_a_bucket_is_recorded_in_that_bucket_with_its_suffix_once(
    registry: Registry,
) -> None:
    _, bucket = await registry.ask("team-a", "churn")
    name, suffix = bucket["name"], bucket["suffix"]
    run = RunScript("wf-submitted", experiment=name, run_name=f"doubling-{suffix}-x7k2")

    await registry.recorder.record(run.started())
    _, asked_by_its_name = await registry.ask("team-a", name)

    (only,) = (await registry.queries.buckets(ListBuckets(namespace="team-a"))).items
    (file,) = (await registry.queries.files(ListFiles(namespace="team-a", bucket=name))).items
    assert only.name == name and only.experiment == "churn"
    assert file.name.startswith(f"doubling-{suffix}-x7k2-") and file.name.count(suffix) == 1
    assert len(file.name.removeprefix(f"doubling-{suffix}-x7k2-")) == 4  # the workflow uid's part
    assert asked_by_its_name["name"] == name and asked_by_its_name["files"] == 1


async def test_a_run_named_without_the_suffix_still_gets_it_in_its_file_name(registry: Registry) -> None:
    await registry.recorder.record(RunScript("wf-plain", experiment="churn", run_name="Nightly training").started())

    (bucket,) = (await registry.queries.buckets(ListBuckets(namespace="team-a"))).items
    (file,) = (await registry.queries.files(ListFiles(namespace="team-a", bucket=bucket.name))).items
    assert file.name.startswith(f"nightly-training-{bucket.suffix}-")


async def test_an_experiment_of_another_namespace_named_as_a_bucket_gets_a_bucket_of_its_own(
    registry: Registry,
) -> None:
    _, theirs = await registry.ask("team-a", "churn")

    _, ours = await registry.ask("team-b", theirs["name"])

    assert ours["namespace"] == "team-b" and ours["experiment"] == theirs["name"]
    assert ours["name"].startswith(f"{theirs['name']}-") and ours["suffix"] != theirs["suffix"]


async def test_an_experiment_name_that_is_empty_or_too_long_is_refused_by_name(registry: Registry) -> None:
    for experiment in ("", "x" * 513):
        status, answer = await registry.ask("team-a", experiment)
        assert status == 422 and "experiment" in json.dumps(answer)
    assert (await registry.queries.buckets(ListBuckets(namespace="team-a"))).items == ()


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_two_replicas_asked_at_once_name_one_bucket(database_url: str, database: Database) -> None:
    other = Database(database_url)
    try:
        replicas = [Recorder(database), Recorder(other)]
        answers = await asyncio.gather(
            *(replicas[i % 2].experiment_bucket("team-a", f"exp-{i // 2 % 4}") for i in range(16))
        )
    finally:
        await other.close()

    by_experiment: dict[str, set[tuple[str, str]]] = {}
    for bucket in answers:
        by_experiment.setdefault(bucket.experiment or "", set()).add((bucket.name, bucket.suffix))
    assert sorted(by_experiment) == ["exp-0", "exp-1", "exp-2", "exp-3"]
    assert all(len(named) == 1 for named in by_experiment.values()), by_experiment
    listed = await Queries(database).buckets(ListBuckets(namespace="team-a"))
    assert len(listed.items) == 4


async def test_naming_a_bucket_takes_the_right_to_start_a_run_and_reading_one_the_right_to_read(
    fake_kube: FakeKube, database: Database
) -> None:
    install_profile_roles(fake_kube)
    add_profile(fake_kube, "team-a", "alice@example.com")
    add_profile(fake_kube, "team-b", "bob@example.com")
    editor = fake_kube.tokens.service_account("team-a", "default-editor")
    viewer = fake_kube.tokens.service_account("team-a", "default-viewer")
    stranger = fake_kube.tokens.service_account("team-b", "default-editor")
    gate = Gate(KubernetesAccess(fake_kube.api_client, ttl=0))
    async for registry in serve(database, gate):
        viewer_new = await registry.ask("team-a", "churn", viewer)
        stranger_new = await registry.ask("team-a", "churn", stranger)
        editor_new = await registry.ask("team-a", "churn", editor)
        viewer_existing = await registry.ask("team-a", "churn", viewer)
        stranger_existing = await registry.ask("team-a", "churn", stranger)

    assert viewer_new[0] == 403 and "start a pipeline run" in viewer_new[1]["error"]["message"]
    assert stranger_new[0] == 403 and stranger_existing[0] == 403
    assert "churn" not in json.dumps(stranger_existing[1])  # nothing of what team-a holds
    assert editor_new[0] == 200 and editor_new[1]["namespace"] == "team-a"
    assert viewer_existing == (200, editor_new[1])
    listed = await Queries(database).buckets(ListBuckets(namespace="team-a"))
    assert [b.name for b in listed.items] == [editor_new[1]["name"]]
