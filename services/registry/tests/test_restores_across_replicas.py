"""A restore is followed from any replica of the registry: behind a Service a client's polls reach replicas at
random, and the one that accepted the restore answers the others over the bus (never the CLI, which may not ask).
Real nats-server with rok's users and permissions."""

from __future__ import annotations

import asyncio

import pytest
from rok_registry.web.access import WebBus
from rokcommon import bus, permissions, streams, subjects
from rokcommon.errors import NotFound
from rokcommon.events import PvcTarget, RestoreCompleted, RestoredVolume
from rokcommon.settings import RokSettings
from roktesting.nats import ADMIN, UsersNats

URL = "rok://team-a/exp-1/run-1?version=k3x9q2mf"


async def test_a_restore_accepted_by_one_replica_is_followed_from_another_for_its_owner_only(
    nats_with_users: UsersNats,
) -> None:
    admin = await nats_with_users.connect(ADMIN)
    replicas = [await nats_with_users.connect(permissions.REGISTRY) for _ in range(2)]
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error))

    cli = await nats_with_users.connect(permissions.CLI, error_cb=on_error)
    try:
        await streams.ensure_streams(admin.jetstream())
        accepting, other = (WebBus(RokSettings(), shared=lambda nc=nc: nc) for nc in replicas)
        watch = await accepting.restore(
            URL, PvcTarget(namespace="team-a", name="back"), (), namespace="team-a", requested_by="alice"
        )

        state = await other.follow(watch.request_id, "alice")
        assert (state["request_id"], state["state"], state["url"]) == (watch.request_id, "requested", URL)
        for request_id, user in ((watch.request_id, "bob"), ("0" * 32, "alice")):
            with pytest.raises(NotFound, match="no restore"):  # another's restore reads as one never asked
                await other.follow(request_id, user)

        done = RestoreCompleted.make(
            request_id=watch.request_id,
            namespace="team-a",
            url=URL,
            volumes=(
                RestoredVolume(name="ws", snapshot_id="s" * 64, location="team-a/back", files=3, bytes=12, seconds=0.1),
            ),
            seconds=0.2,
        )
        await bus.publish(admin.jetstream(), done)
        for _ in range(200):
            state = await other.follow(watch.request_id, "alice")
            if state["state"] == "completed":
                break
            await asyncio.sleep(0.02)
        assert state["state"] == "completed"
        assert state["volumes"][0]["location"] == "team-a/back"

        # a person's rok may not ask the replicas (it would name any user it likes)
        await cli.publish(subjects.restore_watch(watch.request_id), b'{"request_id": "x", "user": "alice"}')
        await cli.flush()
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.02)
        assert any("permissions violation" in e.lower() and subjects.RESTORE_WATCHES in e for e in errors), errors
        await accepting.close()
        await other.close()
    finally:
        for nc in (admin, cli, *replicas):
            await nc.close()
