"""Each component's NATS user against a real nats-server started with the rendered permissions.

What a component needs works (publish, its durable consumers, acks, request-reply, its KV bucket); a publish
outside its subjects is refused by the server (a permissions violation) and never reaches a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats.errors
import pytest
from faststream.nats import NatsMessage
from nats.aio.client import Client
from rokcommon import bus, dead_letters, permissions, streams, subjects
from rokcommon.events import RestoreRequested
from rokcommon.service import Service
from rokcommon.settings import RokSettings
from roktesting.nats import ADMIN, UsersNats, running


class Login:
    """A client logged in as one user, remembering every permissions violation the server reported."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.violated = asyncio.Event()
        self.nc: Client

    async def on_error(self, error: Exception) -> None:
        if "permissions violation" in str(error).lower():
            self.violations.append(str(error))
            self.violated.set()

    async def refused(self, action: str, subject: str) -> None:
        """Wait for the server's violation report of ``action`` (publish, subscription) on ``subject``."""
        await self.nc.flush()
        await asyncio.wait_for(self.violated.wait(), 10)
        found = [v for v in self.violations if f'{action} to "{subject.lower()}' in v.lower()]
        assert found, f"no violation for {action} to {subject}: {self.violations}"
        self.violations.clear()
        self.violated.clear()


@contextlib.asynccontextmanager
async def login(server: UsersNats, user: str) -> AsyncIterator[Login]:
    me = Login()
    me.nc = await server.connect(user, error_cb=me.on_error)
    try:
        yield me
    finally:
        await me.nc.close()


@pytest.fixture
async def admin(nats_with_users: UsersNats) -> AsyncIterator[Client]:
    nc = await nats_with_users.connect(ADMIN)
    await streams.ensure_streams(nc.jetstream())
    yield nc
    await nc.close()


async def stored(admin: Client, stream: str) -> int:
    return (await admin.jetstream().stream_info(stream)).state.messages


async def test_a_wrong_password_is_refused(nats_with_users: UsersNats) -> None:
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(
            nats_with_users.url, user="registry", password="guess", allow_reconnect=False, connect_timeout=5
        )
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(nats_with_users.url, allow_reconnect=False, connect_timeout=5)


async def test_the_watcher_publishes_run_and_step_events_but_no_snapshot_result(
    nats_with_users: UsersNats, admin: Client
) -> None:
    async with login(nats_with_users, permissions.WATCHER) as watcher:
        js = watcher.nc.jetstream()
        await streams.ensure_streams(js)
        ack = await js.publish(f"{subjects.STEP_STARTED}.node-a", b"{}", stream=streams.PIPELINE.name)
        assert ack.stream == streams.PIPELINE.name
        await js.publish(subjects.RUN_FINISHED, b"{}")
        await watcher.nc.publish(subjects.SNAPSHOT_COMPLETED, b"{}")
        await watcher.refused("publish", "rok.snapshot.completed.v1")
    assert await stored(admin, streams.SNAPSHOTS.name) == 0
    assert await stored(admin, streams.PIPELINE.name) == 2


async def test_a_snapshotter_consumes_its_node_and_publishes_results_but_requests_no_restore(
    nats_with_users: UsersNats, admin: Client
) -> None:
    await admin.jetstream().publish(f"{subjects.STEP_STARTED}.node-a", b"{}")
    async with login(nats_with_users, permissions.SNAPSHOTTER) as snapshotter:
        js = snapshotter.nc.jetstream()
        spec = streams.ConsumerSpec(streams.PIPELINE, "snapshotter-node-a", "rok.step.*.v1.node-a")
        await streams.ensure_consumer(js, spec)
        sub = await js.pull_subscribe(spec.filter_subject, durable=spec.durable, stream=spec.stream.name)
        (msg,) = await sub.fetch(1, timeout=5)
        await msg.in_progress()
        await msg.ack_sync()
        await js.publish(subjects.SNAPSHOT_COMPLETED, b"{}")
        kv = await js.create_key_value(bucket="rok-snapshots")
        await kv.put("done", b"1")
        assert (await kv.get("done")).value == b"1"
        await snapshotter.nc.publish(subjects.RESTORE_REQUESTED, b"{}")
        await snapshotter.refused("publish", subjects.RESTORE_REQUESTED)
    info = await admin.jetstream().consumer_info(streams.PIPELINE.name, "snapshotter-node-a")
    assert info.num_ack_pending == 0 and info.delivered.stream_seq == 1
    assert await stored(admin, streams.RESTORES.name) == 0
    assert await stored(admin, streams.SNAPSHOTS.name) == 1


def test_a_node_snapshotter_may_not_take_another_nodes_events() -> None:
    node_a = permissions.snapshotter("node-a")
    assert f"{permissions.API}.CONSUMER.MSG.NEXT.ROK_PIPELINE.snapshotter-node-a" in node_a.publish
    assert not any("snapshotter-node-b" in s for s in node_a.publish)
    assert node_a.user == "snapshotter-node-a"


async def test_the_guard_follows_commits_but_cannot_forge_a_step_event(
    nats_with_users: UsersNats, admin: Client
) -> None:
    await admin.jetstream().publish(subjects.VERSION_COMMITTED, b'{"x": 1}')
    async with login(nats_with_users, permissions.GUARD) as guard:
        js = guard.nc.jetstream()
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def on(msg: object) -> None:
            await got.put(msg.data)  # type: ignore[attr-defined]

        sub = await js.subscribe(subjects.VERSION_COMMITTED, cb=on, ordered_consumer=True)
        assert await asyncio.wait_for(got.get(), 10) == b'{"x": 1}'
        await sub.unsubscribe()
        await guard.nc.publish(f"{subjects.STEP_FINISHED}.node-a", b"{}")
        await guard.refused("publish", "rok.step.finished.v1")
        await guard.nc.publish(subjects.VERSION_COMMITTED, b"{}")
        await guard.refused("publish", "rok.version.committed.v1")
        await guard.nc.subscribe("_INBOX.registry.>")
        await guard.refused("subscription", "_INBOX.registry")
    assert await stored(admin, streams.PIPELINE.name) == 0
    assert await stored(admin, streams.VERSIONS.name) == 1


async def test_the_registry_answers_queries_and_announces_versions_but_forges_no_step(
    nats_with_users: UsersNats, admin: Client
) -> None:
    async with login(nats_with_users, permissions.REGISTRY) as registry, login(nats_with_users, permissions.CLI) as cli:

        async def answer(msg: object) -> None:
            await msg.respond(b"answer to " + msg.data)  # type: ignore[attr-defined]

        await registry.nc.subscribe(subjects.registry_query("resolve"), queue="rok-registry", cb=answer)
        await registry.nc.flush()
        reply = await cli.nc.request(subjects.registry_query("resolve"), b"q", timeout=5)
        assert reply.data == b"answer to q"
        await registry.nc.jetstream().publish(subjects.VERSION_COMMITTED, b"{}")
        await registry.nc.publish(f"{subjects.STEP_STARTED}.node-a", b"{}")
        await registry.refused("publish", "rok.step.started.v1")
        await registry.nc.publish("_INBOX.cli.stolen", b"{}")
        await registry.refused("publish", "_INBOX.cli.stolen")
    assert await stored(admin, streams.PIPELINE.name) == 0
    assert await stored(admin, streams.VERSIONS.name) == 1


async def test_the_restorer_publishes_outcomes_and_keeps_its_bucket_but_commits_no_version(
    nats_with_users: UsersNats, admin: Client
) -> None:
    async with login(nats_with_users, permissions.RESTORER) as restorer:
        js = restorer.nc.jetstream()
        await js.publish(subjects.RESTORE_COMPLETED, b"{}")
        await restorer.nc.publish(f"{subjects.RESTORE_PROGRESS}.r1", b"{}")
        kv = await js.create_key_value(bucket="rok_restores")
        await kv.put("r1", b"claimed")
        assert (await kv.get("r1")).value == b"claimed"
        await restorer.nc.publish(subjects.VERSION_COMMITTED, b"{}")
        await restorer.refused("publish", "rok.version.committed.v1")
        await restorer.nc.publish("$KV.rok-snapshots.done", b"1")
        await restorer.refused("publish", "$KV.rok-snapshots.done")
    assert await stored(admin, streams.VERSIONS.name) == 0
    assert await stored(admin, streams.RESTORES.name) == 1


async def test_the_cli_requests_restores_but_forges_no_event(nats_with_users: UsersNats, admin: Client) -> None:
    async with login(nats_with_users, permissions.CLI) as cli:
        js = cli.nc.jetstream()
        await js.publish(subjects.RESTORE_REQUESTED, b"{}")
        await cli.nc.subscribe(subjects.RESTORE_COMPLETED)
        await cli.nc.publish(subjects.RESTORE_COMPLETED, b"{}")
        await cli.refused("publish", "rok.restore.completed.v1")
        await cli.nc.publish(f"{subjects.RUN_STARTED}.node-a", b"{}")
        await cli.refused("publish", "rok.run.started.v1")
    assert await stored(admin, streams.RESTORES.name) == 1
    assert await stored(admin, streams.PIPELINE.name) == 0


async def test_a_service_with_credentials_consumes_acks_and_dead_letters(
    nats_with_users: UsersNats, admin: Client
) -> None:
    """The restorer's service runtime as its own user: declare, consume, ack, dead-letter a bad message."""
    settings = RokSettings(
        nats_url=nats_with_users.url,
        nats_user=permissions.RESTORER,
        nats_password=nats_with_users.passwords[permissions.RESTORER],  # type: ignore[arg-type]
        log_format="text",
        ack_wait=5.0,
    )
    service = Service("restorer", settings, graceful_timeout=2.0)
    received: asyncio.Queue[RestoreRequested] = asyncio.Queue()

    @service.consumer(service.consumer_spec(streams.RESTORES, "restorer", subjects.RESTORE_REQUESTED))
    async def on_request(event: RestoreRequested, msg: NatsMessage) -> None:
        await received.put(event)

    request = RestoreRequested.make(
        request_id="r1", namespace="ns", url="rok://x", target={"kind": "directory", "path": "/x"}
    )
    async with running(service), login(nats_with_users, permissions.CLI) as cli:
        js = cli.nc.jetstream()
        await js.publish(subjects.RESTORE_REQUESTED, b"not json")
        await js.publish(subjects.RESTORE_REQUESTED, request.model_dump_json().encode())
        assert (await asyncio.wait_for(received.get(), 10)).request_id == "r1"
        for _ in range(100):
            info = await admin.jetstream().consumer_info(streams.RESTORES.name, "restorer")
            if info.num_ack_pending == 0 and await stored(admin, streams.DLQ.name) == 1:
                break
            await asyncio.sleep(0.1)
    assert info.num_ack_pending == 0
    assert await stored(admin, streams.DLQ.name) == 1


def test_every_user_replies_on_its_own_inbox_only() -> None:
    rendered = permissions.render(
        permissions.table(permissions.LOCAL_USERS), dict.fromkeys(permissions.LOCAL_USERS, "$P")
    )
    for user in permissions.LOCAL_USERS:
        assert f'"_INBOX.{user}.>"' in rendered
    assert '"_INBOX.>"' not in rendered
    assert '">"' not in rendered


async def test_the_operator_reads_and_replays_dead_letters_but_forges_no_version(
    nats_with_users: UsersNats, admin: Client
) -> None:
    await bus.dead_letter(
        admin.jetstream(),
        payload=b"{}",
        subject=subjects.RUN_FINISHED,
        stream=streams.PIPELINE.name,
        consumer="registry-pipeline",
        sequence=7,
        deliveries=1,
        reason="invalid RunFinished",
    )
    async with login(nats_with_users, permissions.OPERATOR) as operator:
        js = operator.nc.jetstream()
        [letter] = await dead_letters.letters(js)
        again = await dead_letters.replay(js, letter)
        assert (await dead_letters.letter(js, letter.id)).replayed == again
        await operator.nc.publish(subjects.VERSION_COMMITTED, b"{}")
        await operator.refused("publish", subjects.VERSION_COMMITTED)
    assert await stored(admin, streams.PIPELINE.name) == 1
    assert await stored(admin, streams.VERSIONS.name) == 0
    # a person's cli may not replay: it cannot read the dead letters
    async with login(nats_with_users, permissions.CLI) as cli:
        await cli.nc.publish(f"{permissions.API}.STREAM.MSG.GET.{streams.DLQ.name}", b"{}")
        await cli.refused("publish", f"$JS.API.STREAM.MSG.GET.{streams.DLQ.name}")
