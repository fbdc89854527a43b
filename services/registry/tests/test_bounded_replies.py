"""Every reply fits in one bus message: lists come in pages, and what cannot fit (or fails) is an error reply.

The registry runs against a nats-server whose ``max_payload`` is 16 KiB, so that a few dozen versions would
overflow one reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from registry_testkit import RunScript
from rok_registry.main import Registry, build
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rok_registry.settings import RegistrySettings
from rokcommon import subjects
from rokcommon.errors import AnswerTooLarge, InvalidRequest, QueryFailed
from rokcommon.events import SnapshotChanges, SnapshotCompleted, VolumeRef
from rokcommon.events.values import CHANGED_PATHS_LISTED
from rokcommon.registry_client import RegistryClient
from rokcommon.registry_contract import MAX_PAGE, GetLineage, ListVersions, Reply, reply_budget
from rokcommon.versions import VersionKey
from roktesting.nats import NatsServer, running
from roktesting.ports import free_port
from sqlalchemy import text

MAX_PAYLOAD = 16 * 1024
NS = "team-a"


@pytest.fixture
def small_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp("nats-small")
    config = root / "small.conf"
    config.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    server = NatsServer(root / "store", config=config)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nc(small_nats: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(small_nats.url)
    assert client.max_payload == MAX_PAYLOAD
    yield client
    await client.close()


@asynccontextmanager
async def serving(server: NatsServer, state: Path) -> AsyncIterator[Registry]:
    settings = RegistrySettings(
        nats_url=server.url, state_dir=state, log_format="text", registry_port=free_port(), retry_delay=0.2
    )
    registry = build(settings, graceful_timeout=2.0)
    await registry.start_storage()
    try:
        async with running(registry.service):
            yield registry
    finally:
        await registry.stop_storage()


async def record(registry: Registry, events: list[object]) -> None:
    """Record straight into the served registry's database (some events are larger than one bus message)."""
    for event in events:
        await registry.recorder.record(event)  # type: ignore[arg-type]


def long_run(uid: str, steps: int) -> RunScript:
    """A run whose names are as long as names get, with many steps."""
    return RunScript(
        uid,
        namespace=NS,
        experiment="e" * 200,
        run_name="r" * 200,
        steps=tuple(f"step-{i:03d}-{'s' * 180}" for i in range(steps)),
    )


async def test_a_run_whose_versions_overflow_one_message_is_listed_page_by_page_newest_first(
    small_nats: NatsServer, nc: Client, tmp_path: Path
) -> None:
    script = long_run("wf-1", steps=30)  # 61 versions of about 2 KB each: far more than one reply carries
    async with serving(small_nats, tmp_path / "state") as registry:
        await record(registry, script.events())
        client = RegistryClient(nc, NS, timeout=5)
        [bucket] = await client.list_buckets()
        [run] = await client.list_files(bucket.name)

        first = await client.versions_page(bucket.name, run.name, limit=MAX_PAGE)
        assert 0 < len(first.items) < 61 and first.next is not None and first.prev is None
        assert first.total == 61
        newest_first = [v.taken_at for v in first.items]
        assert newest_first == sorted(newest_first, reverse=True)

        every = [v async for v in client.iter_versions(bucket.name, run.name, order="newest")]
        assert len({v.id for v in every}) == 61
        assert [v.id for v in every[: len(first.items)]] == [v.id for v in first.items]
        oldest_first = await client.list_versions(bucket.name, run.name)
        assert [v.id for v in oldest_first] == [v.id for v in reversed(every)]

        second = await client.versions_page(bucket.name, run.name, limit=10, cursor=first.next)
        back = await client.versions_page(bucket.name, run.name, limit=10, cursor=second.prev)
        assert [v.id for v in back.items] == [v.id for v in first.items][-10:]

        lineage = await client.lineage(bucket.name, run.name)  # its steps come a page at a time, too
        assert [s.name for s in lineage.steps] == list(script.steps)
        assert all(s.before is not None and s.after is not None for s in lineage.steps)


async def test_a_page_stays_stable_while_runs_are_recorded_in_front_of_it(
    small_nats: NatsServer, nc: Client, tmp_path: Path
) -> None:
    async with serving(small_nats, tmp_path / "state") as registry:
        for i in range(12):
            script = RunScript(f"wf-{i:02d}", namespace=NS, steps=())
            script.clock = script.clock + timedelta(minutes=i)
            await record(registry, [script.started().model_copy(update={"started_at": script.clock})])
        client = RegistryClient(nc, NS, timeout=5)
        [bucket] = await client.list_buckets()
        first = await client.files_page(bucket.name, limit=5)
        assert [f.workflow_uid for f in first.items] == [f"wf-{i:02d}" for i in (11, 10, 9, 8, 7)]

        later = RunScript("wf-new", namespace=NS, steps=())
        await record(registry, [later.started().model_copy(update={"started_at": later.clock + timedelta(hours=1)})])

        second = await client.files_page(bucket.name, limit=5, cursor=first.next)
        assert [f.workflow_uid for f in second.items] == [f"wf-{i:02d}" for i in (6, 5, 4, 3, 2)]
        assert second.total == 13
        with pytest.raises(InvalidRequest, match="is for order 'newest', not 'oldest'"):
            await client.files_page(bucket.name, cursor=first.next, order="oldest")
        with pytest.raises(InvalidRequest, match="is not one a page of this list gave"):
            await client.files_page(bucket.name, cursor="not-a-cursor")


async def test_an_answer_too_large_for_one_message_is_an_error_naming_its_size(
    small_nats: NatsServer, nc: Client, tmp_path: Path
) -> None:
    # one version of eight volumes, each with a long summary of what it changed: larger than one message
    volumes = tuple(VolumeRef(name=f"data-{i}", role="data", path=f"/vol/{i}") for i in range(8))
    script = RunScript("wf-big", namespace=NS, steps=(), volumes=volumes)
    changes = SnapshotChanges.between("parent", [f"added/{'p' * 80}-{i}" for i in range(40)], [], [])
    events = [
        e.model_copy(update={"changes": changes}) if isinstance(e, SnapshotCompleted) else e for e in script.events()
    ]
    async with serving(small_nats, tmp_path / "state") as registry:
        await record(registry, events)
        client = RegistryClient(nc, NS, timeout=5)
        [bucket] = await client.list_buckets()
        [run] = await client.list_files(bucket.name)

        with pytest.raises(AnswerTooLarge, match=r"the answer to version is \d+ bytes, more than one bus message"):
            await client.get_version(f"{run.url}?version={VersionKey.initial('wf-big').version_id}")
        with pytest.raises(AnswerTooLarge, match=r"a version alone is \d+ bytes"):
            await client.versions_page(bucket.name, run.name)
        assert (await client.files_page(bucket.name)).items == (run,)  # and it answers everything else


async def test_a_query_that_fails_unexpectedly_is_an_error_naming_the_failure(
    small_nats: NatsServer, nc: Client, tmp_path: Path
) -> None:
    async with serving(small_nats, tmp_path / "state") as registry:
        await record(registry, RunScript("wf-1", namespace=NS).events())
        async with registry.db.engine.begin() as conn:
            await conn.execute(text("DROP TABLE members"))
        client = RegistryClient(nc, NS, timeout=5)
        [bucket] = await client.list_buckets()
        [run] = await client.list_files(bucket.name)
        with pytest.raises(
            QueryFailed, match=r"the registry failed to answer: OperationalError.*no such table: members"
        ):
            await client.list_versions(bucket.name, run.name)
        raw = await nc.request(
            subjects.registry_query("lineage"), b'{"namespace": "team-a", "bucket": "x", "file": "y"}'
        )
        assert Reply.model_validate_json(raw.data).error is not None


async def test_pages_of_the_largest_versions_fit_the_default_payload_limit_whatever_their_size(
    recorder: Recorder, queries: Queries
) -> None:
    # four volumes per version, each summarising as many paths as a summary lists: ~170 KB a version
    volumes = tuple(VolumeRef(name=f"volume-{i}", role="data", path=f"/vol/{i}") for i in range(4))
    script = RunScript("wf-huge", namespace=NS, steps=tuple(f"step-{i}" for i in range(10)))
    script.volumes = volumes
    paths = [f"{'deep/' * 6}{'p' * 30}-{i:03d}" for i in range(CHANGED_PATHS_LISTED)]
    changes = SnapshotChanges.between("parent", paths, paths, paths)
    for event in script.events():
        await recorder.record(
            event.model_copy(update={"changes": changes}) if isinstance(event, SnapshotCompleted) else event
        )
    [bucket] = await queries.list_buckets(NS)
    [run] = await queries.list_files(NS, bucket.name)
    budget = reply_budget(1 << 20)  # nats-server's default max_payload

    seen: list[str] = []
    cursor = None
    while True:
        page = await queries.versions(
            ListVersions(namespace=NS, bucket=bucket.name, file=run.name, limit=MAX_PAGE, cursor=cursor), budget=budget
        )
        assert len(Reply(result=page.model_dump(mode="json")).model_dump_json().encode()) <= budget
        assert page.items, "every page holds at least one version"
        seen += [v.id for v in page.items]
        if page.next is None:
            break
        cursor = page.next
    assert len(seen) == len(set(seen)) == 21
    lineage = await queries.lineage_page(GetLineage(namespace=NS, bucket=bucket.name, file=run.name), budget=budget)
    assert len(Reply(result=lineage.model_dump(mode="json")).model_dump_json().encode()) <= budget
    assert 0 < len(lineage.steps) < 10 and lineage.next is not None
