"""Forget, pin and the store's question (which snapshots are recorded) through a served registry: over NATS on a
nats-server whose ``max_payload`` is 8 KiB, so that answers must stay bounded, and over HTTP, where forgetting and
pinning need their own permission in the namespace (Kubeflow's edit role), and reading suffices for a dry run."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from registry_testkit import RunScript
from rok_registry.api import create_app
from rok_registry.database import Database
from rok_registry.gate import Gate
from rok_registry.http_server import HttpServer
from rok_registry.main import Registry, build
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rok_registry.retention import Retention
from rok_registry.settings import RegistrySettings
from rokcommon.authz import KubernetesAccess
from rokcommon.errors import Forbidden
from rokcommon.registry_contract import KeepRules
from rokcommon.retention import RetentionClient, recorded_snapshots
from roktesting.kubeflow import add_contributor, add_profile, install_profile_roles
from roktesting.kubernetes import FakeKube
from roktesting.nats import NatsServer, running
from roktesting.ports import free_port

MAX_PAYLOAD = 8 * 1024


@pytest.fixture(scope="module")
def small_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp("nats-small")
    config = root / "small.conf"
    config.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    server = NatsServer(root / "store", config=config)
    server.start()
    yield server
    server.stop()


@asynccontextmanager
async def serving(server: NatsServer, state: Path) -> AsyncIterator[tuple[Registry, Client]]:
    settings = RegistrySettings(
        nats_url=server.url, state_dir=state, log_format="text", registry_port=free_port(), retry_delay=0.2
    )
    registry = build(settings, graceful_timeout=2.0)
    await registry.start_storage()
    try:
        async with running(registry.service):
            nc = await nats.connect(server.url)
            try:
                yield registry, nc
            finally:
                await nc.close()
    finally:
        await registry.stop_storage()


async def test_a_forget_of_many_runs_answers_within_one_message_and_gc_learns_every_snapshots_state(
    small_nats: NatsServer, tmp_path: Path
) -> None:
    async with serving(small_nats, tmp_path / "state") as (registry, nc):
        # names as long as they get, so that the list of what went outgrows one reply
        runs = [
            RunScript(f"wf-{i:03d}", experiment="e" * 200, run_name="r" * 200, steps=("prepare",)) for i in range(12)
        ]
        for run in runs:
            assert not any(isinstance(o, Exception) for o in await registry.recorder.record_batch(run.events()))
        retention = RetentionClient(nc, "team-a", requested_by="alice")
        dry = await retention.forget(KeepRules(keep_last=2, keep_tags=()), dry_run=True)
        assert dry.runs_forgotten == 10 and dry.runs_removed == 10
        assert 0 < dry.runs_listed < dry.runs_forgotten  # the list is cut to fit 8 KiB; the counts are whole

        done = await retention.forget(KeepRules(keep_last=2, keep_tags=()))
        assert (done.runs_removed, done.by) == (10, "alice")

        # the store asks about 600 ids (five times what one 8 KiB message holds): batch after batch
        kept = {f"snap-{r.run.workflow_uid}-prepare-after-workspace" for r in runs[-2:]}
        forgotten = {f"snap-{r.run.workflow_uid}-prepare-after-workspace" for r in runs[:-2]}
        unknown = {f"{i:064x}" for i in range(600 - len(kept) - len(forgotten))}
        recorded, gone = await recorded_snapshots(nc, sorted(kept | forgotten | unknown))
        assert (recorded, gone) == (kept, forgotten)

        # another namespace's URL is refused over the bus as over HTTP
        other = RetentionClient(nc, "team-b", requested_by="mallory")
        (bucket,) = [b.name for b in await registry.queries.list_buckets("team-a")]
        url = (await registry.queries.list_files("team-a", bucket))[0].url
        with pytest.raises(Forbidden, match="belongs to namespace 'team-a'"):
            await other.pin(url)


def _call(method: str, url: str, user: str, body: dict[str, object] | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("kubeflow-userid", user)
    request.add_header("Content-Type", "application/json")
    request.add_header("Origin", url.split("/api/")[0])  # a page of this very site
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())


async def test_over_http_forgetting_and_pinning_need_the_edit_role_of_the_namespace(
    fake_kube: FakeKube, database: Database, recorder: Recorder
) -> None:
    install_profile_roles(fake_kube)
    add_profile(fake_kube, "team-a", "alice@example.com")
    add_profile(fake_kube, "team-b", "bob@example.com")
    add_contributor(fake_kube, "team-a", "carol@example.com", "kubeflow-view")
    for i in range(3):
        assert not any(isinstance(o, Exception) for o in await recorder.record_batch(RunScript(f"wf-{i}").events()))
    queries = Queries(database)
    (bucket,) = [b.name for b in await queries.list_buckets("team-a")]
    run_url = (await queries.list_files("team-a", bucket))[-1].url  # the oldest: only its pin keeps it
    gate = Gate(KubernetesAccess(fake_kube.api_client, ttl=0))
    http = HttpServer(create_app(queries, gate=gate, retention=Retention(database)), "127.0.0.1", 0)
    await http.start()
    api = f"{http.url}/api/v1/namespaces/team-a"
    forget = {"bucket": bucket, "keep_last": 1, "keep_tags": []}
    pins = f"{api}/pins?url={urllib.request.quote(run_url)}"
    try:
        answers = {
            "bob forgets": await asyncio.to_thread(_call, "POST", f"{api}/forget", "bob@example.com", forget),
            "bob pins": await asyncio.to_thread(_call, "PUT", pins, "bob@example.com"),
            "carol forgets": await asyncio.to_thread(_call, "POST", f"{api}/forget", "carol@example.com", forget),
            "carol pins": await asyncio.to_thread(_call, "PUT", pins, "carol@example.com"),
            "carol's dry run": await asyncio.to_thread(
                _call, "POST", f"{api}/forget", "carol@example.com", {**forget, "dry_run": True}
            ),
            "alice pins": await asyncio.to_thread(_call, "PUT", pins, "alice@example.com"),
            "alice forgets": await asyncio.to_thread(_call, "POST", f"{api}/forget", "alice@example.com", forget),
            "a bad duration": await asyncio.to_thread(
                _call, "POST", f"{api}/forget", "alice@example.com", {"keep_within": "a while"}
            ),
            "carol reads the record": await asyncio.to_thread(_call, "GET", f"{api}/forgets", "carol@example.com"),
            "bob reads the record": await asyncio.to_thread(_call, "GET", f"{api}/forgets", "bob@example.com"),
        }
    finally:
        await http.stop()
    statuses = {what: status for what, (status, _) in answers.items()}
    assert statuses == {
        "bob forgets": 403,
        "bob pins": 403,
        "carol forgets": 403,
        "carol pins": 403,
        "carol's dry run": 200,
        "alice pins": 200,
        "alice forgets": 200,
        "a bad duration": 422,
        "carol reads the record": 200,
        "bob reads the record": 403,
    }
    assert "may not forget rok's versions in namespace 'team-a'" in answers["carol forgets"][1]["error"]["message"]
    assert answers["carol's dry run"][1]["runs_removed"] == 2
    report = answers["alice forgets"][1]
    assert (report["by"], report["runs_removed"]) == ("alice@example.com", 1)  # the pinned run stayed
    assert {f.url for f in await queries.list_files("team-a", bucket)} >= {run_url}
    (record,) = answers["carol reads the record"][1]["items"]  # the dry run and the refused ones left none
    assert (record["by"], record["rules"], record["runs"], record["snapshots"]) == (
        "alice@example.com",
        "keep-last 1, no keep-tag",
        1,
        report["snapshots_forgotten"],
    )
