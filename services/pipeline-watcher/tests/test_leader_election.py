"""Leader election over a Lease on the fake API server: one replica leads, another takes over only when it may."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client
from rok_pipeline_watcher.leader import LeaderElection, LeaseLost

LEASES = "/apis/coordination.k8s.io/v1/namespaces/rok/leases"


def election(
    fake_kube,
    identity: str,
    *,
    lease_seconds: int = 2,
    renew_every: float = 0.2,
    skew: timedelta = timedelta(0),
    api_client=None,
) -> LeaderElection:
    """A replica; ``skew`` sets its wall clock that far off the true time, as on a node whose clock drifted."""
    return LeaderElection(
        api_client or fake_kube.api_client,
        name="rok-pipeline-watcher",
        namespace="rok",
        identity=identity,
        lease_seconds=lease_seconds,
        renew_every=renew_every,
        wall_clock=lambda: datetime.now(UTC) + skew,
    )


def lease_spec(fake_kube) -> dict:
    return fake_kube.get(f"{LEASES}/rok-pipeline-watcher")["spec"]


@contextlib.asynccontextmanager
async def running(elector: LeaderElection):
    task = asyncio.create_task(elector.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_one_replica_leads_and_the_other_waits_while_the_lease_is_renewed(fake_kube):
    a, b = election(fake_kube, "replica-a"), election(fake_kube, "replica-b")
    async with running(a):
        await asyncio.wait_for(a.acquired.wait(), 5)
        async with running(b):
            await asyncio.sleep(3)  # longer than the lease: a keeps renewing it
            assert not b.acquired.is_set()
            assert lease_spec(fake_kube)["holderIdentity"] == "replica-a"
            assert lease_spec(fake_kube)["leaseDurationSeconds"] == 2


async def test_a_leader_that_stops_gives_the_lease_up_and_the_standby_takes_over(fake_kube):
    # a lease of 30 s: the standby can only take over within the test because the leader released it
    a = election(fake_kube, "replica-a", lease_seconds=30)
    b = election(fake_kube, "replica-b", lease_seconds=30)
    leading = asyncio.create_task(a.run())
    await asyncio.wait_for(a.acquired.wait(), 5)
    async with running(b):
        await asyncio.sleep(0.5)
        assert not b.acquired.is_set()
        leading.cancel()  # SIGTERM
        with contextlib.suppress(asyncio.CancelledError):
            await leading
        await asyncio.wait_for(b.acquired.wait(), 5)
        assert lease_spec(fake_kube)["holderIdentity"] == "replica-b"


async def test_a_lease_left_by_a_crashed_leader_is_taken_over_only_once_it_expires(fake_kube):
    renewed = datetime.now(UTC)
    fake_kube.create(
        LEASES,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "rok-pipeline-watcher", "namespace": "rok"},
            "spec": {
                "holderIdentity": "crashed",
                "leaseDurationSeconds": 2,
                "renewTime": renewed.isoformat(),
                "leaseTransitions": 3,
            },
        },
    )
    b = election(fake_kube, "replica-b")
    async with running(b):
        await asyncio.wait_for(b.acquired.wait(), 10)
        took_over = datetime.now(UTC)
    assert took_over - renewed >= timedelta(seconds=2)
    assert lease_spec(fake_kube)["leaseTransitions"] == 4


def test_of_two_replicas_writing_over_the_same_expired_lease_only_the_first_wins(fake_kube):
    a, b = election(fake_kube, "replica-a"), election(fake_kube, "replica-b")
    old = datetime.now(UTC) - timedelta(minutes=5)
    fake_kube.create(
        LEASES,
        {
            "metadata": {"name": "rok-pipeline-watcher", "namespace": "rok"},
            "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 2, "renewTime": old.isoformat()},
        },
    )
    api = client.CoordinationV1Api(fake_kube.api_client)
    seen_by_a = api.read_namespaced_lease("rok-pipeline-watcher", "rok")
    seen_by_b = api.read_namespaced_lease("rok-pipeline-watcher", "rok")
    assert a._write(seen_by_a, datetime.now(UTC)) == "held"
    assert b._write(seen_by_b, datetime.now(UTC)) == "unknown"  # 409 Conflict: its read was stale
    assert lease_spec(fake_kube)["holderIdentity"] == "replica-a"


async def test_a_leader_that_finds_another_holder_stops_leading(fake_kube):
    a = election(fake_kube, "replica-a", lease_seconds=30, renew_every=0.2)
    task = asyncio.create_task(a.run())
    await asyncio.wait_for(a.acquired.wait(), 5)
    fake_kube.patch(
        f"{LEASES}/rok-pipeline-watcher",
        {"spec": {"holderIdentity": "usurper", "renewTime": datetime.now(UTC).isoformat()}},
    )
    with pytest.raises(LeaseLost, match="lost the lease rok/rok-pipeline-watcher"):
        await asyncio.wait_for(task, 5)
    assert a.lost.is_set()


SKEWS = [(timedelta(minutes=-5), timedelta(minutes=5)), (timedelta(minutes=5), timedelta(minutes=-5))]


def leading(elector: LeaderElection, task: asyncio.Task) -> bool:
    return elector.acquired.is_set() and not elector.lost.is_set() and not task.done()


@pytest.mark.parametrize(("leader_skew", "standby_skew"), SKEWS, ids=["standby-ahead", "standby-behind"])
async def test_a_standby_whose_clock_is_minutes_off_never_takes_over_a_lease_that_is_renewed(
    fake_kube, leader_skew, standby_skew
):
    a = election(fake_kube, "replica-a", skew=leader_skew)
    b = election(fake_kube, "replica-b", skew=standby_skew)
    async with running(a) as task_a:
        await asyncio.wait_for(a.acquired.wait(), 5)
        async with running(b):
            for _ in range(30):  # three seconds, longer than the lease: a renews it all along
                await asyncio.sleep(0.1)
                assert leading(a, task_a)
                assert not b.acquired.is_set()
    acquired = datetime.fromisoformat(lease_spec(fake_kube)["acquireTime"].replace("Z", "+00:00"))
    assert abs(acquired - (datetime.now(UTC) + leader_skew)) < timedelta(minutes=1)  # stamped by a's clock …
    assert lease_spec(fake_kube).get("holderIdentity") is None  # … and released when a stopped


@pytest.mark.parametrize(("leader_skew", "standby_skew"), SKEWS, ids=["standby-ahead", "standby-behind"])
async def test_a_leader_that_dies_is_followed_by_a_skewed_standby_within_the_lease_duration(
    fake_kube, leader_skew, standby_skew
):
    a = election(fake_kube, "replica-a", skew=leader_skew)
    b = election(fake_kube, "replica-b", skew=standby_skew)
    a._release = lambda: None  # it crashes: nothing gives the lease up
    task_a = asyncio.create_task(a.run())
    await asyncio.wait_for(a.acquired.wait(), 5)
    async with running(b):
        await asyncio.sleep(0.5)
        assert not b.acquired.is_set()
        task_a.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task_a
        assert not b.acquired.is_set()
        # the lease's duration, one poll, and room for a busy machine: b saw a's last renewal before a died
        await asyncio.wait_for(b.acquired.wait(), 2 + 0.2 + 1)
    assert lease_spec(fake_kube)["leaseTransitions"] == 1


async def test_a_leader_cut_off_from_the_api_server_stops_leading_before_a_skewed_standby_takes_over(fake_kube):
    configuration = client.Configuration()
    configuration.host = fake_kube.url
    cut_off = client.ApiClient(configuration)
    a = election(fake_kube, "replica-a", skew=timedelta(minutes=-5), api_client=cut_off)
    b = election(fake_kube, "replica-b", skew=timedelta(minutes=5))
    task_a = asyncio.create_task(a.run())
    await asyncio.wait_for(a.acquired.wait(), 5)
    async with running(b) as task_b:
        await asyncio.sleep(0.5)
        configuration.host = "http://127.0.0.1:9"  # a's node loses the network; a itself runs on

        overlap = []

        async def watch_both():
            while not b.acquired.is_set():
                overlap.append(leading(a, task_a) and leading(b, task_b))
                await asyncio.sleep(0.01)

        watching = asyncio.create_task(watch_both())
        await asyncio.wait_for(b.acquired.wait(), 10)
        assert a.lost.is_set()  # a had stopped leading when b began
        await watching
    with pytest.raises(LeaseLost):
        await task_a
    cut_off.close()
    assert overlap and not any(overlap)
