"""The snapshotter in a cluster, on a real nats-server with the fake Kubernetes API: a run's pod's claims are
snapshotted from the kubelet's directory; forged events are dead-lettered with the reason, and nothing is
stored or announced for them."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cluster_helpers import LOCAL_PV, NODE, WS_PV, Cluster, another_runs_pod, make_cluster
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from rok_snapshotter.main import build
from rok_snapshotter.settings import SnapshotterSettings
from rokcommon import bus, streams
from rokcommon.events import SnapshotCompleted, StepStarted, VolumeRef
from rokstore import RepositoryNotFound, SnapshotInfo, open_repository, restore
from roktesting.kubernetes import FakeKube
from roktesting.nats import running
from snapshotter_helpers import settled, snapshot_events, tree

DURABLE = "snapshotter-ip-10-0-1-17_ec2_internal"
CSI = "kubernetes.io~csi"


@pytest.fixture
def cluster(fake_kube: FakeKube, tmp_path: Path) -> Cluster:
    return make_cluster(fake_kube, tmp_path / "kubelet" / "pods")


@pytest.fixture
def settings(settings_for: Callable[..., SnapshotterSettings], cluster: Cluster) -> SnapshotterSettings:
    return settings_for(kube="incluster", node_name=NODE, kubelet_pods_dir=cluster.pods_dir, volume_roots="")


async def dead_letters(js: JetStreamContext, count: int) -> list[Msg]:
    """The first ``count`` dead letters (waiting for them)."""
    letters = await js.pull_subscribe("rok.dlq.>", stream=streams.DLQ.name)
    found: list[Msg] = []
    while len(found) < count:
        found += await letters.fetch(count - len(found), timeout=15)
    return found


def step_started(cluster: Cluster, volumes: tuple[VolumeRef, ...], *, attempt: int = 0) -> StepStarted:
    step = cluster.step("make-data").model_copy(update={"attempt": attempt})
    return StepStarted.make(step=step, node=NODE, volumes=volumes, started_at=datetime.now(UTC))


async def test_a_step_pods_claims_are_snapshotted_from_where_the_kubelet_mounted_them(
    settings: SnapshotterSettings, cluster: Cluster, fake_kube: FakeKube, js: JetStreamContext, tmp_path: Path
) -> None:
    files = {"lib/model.pkl": b"\x80weights" * 1000, "train.py": b"print('train')\n"}
    cluster.mount("make-data", CSI, WS_PV, files)  # vol_data.json sits beside the mount, not in it
    cluster.mount("make-data", "kubernetes.io~local-volume", LOCAL_PV, {"table.csv": b"a,b\n"})
    volumes = (
        cluster.volume("make-data", "pvc-ws", pv=WS_PV),
        cluster.volume("make-data", "pvc-data", role="data"),
    )
    async with running(build(settings, api_client=fake_kube.api_client)):
        await bus.publish(js, step_started(cluster, volumes))
        announced = await snapshot_events(js, 2)
    by_volume = {e.volume.name: e for e in announced if isinstance(e, SnapshotCompleted)}
    assert set(by_volume) == {"ws-nb-1-run-8xfss", "data-nb-1-run-8xfss"}
    async with await open_repository(settings.repository_url) as repo:
        await restore(repo, by_volume["ws-nb-1-run-8xfss"].snapshot_id, tmp_path / "ws")
        await restore(repo, by_volume["data-nb-1-run-8xfss"].snapshot_id, tmp_path / "data")
    assert tree(tmp_path / "ws") == files
    assert tree(tmp_path / "data") == {"table.csv": b"a,b\n"}


async def test_forged_events_are_dead_lettered_with_the_reason_and_nothing_is_stored_or_announced(
    settings: SnapshotterSettings, cluster: Cluster, fake_kube: FakeKube, js: JetStreamContext, tmp_path: Path
) -> None:
    secret = tmp_path / "secret-outside"
    secret.mkdir()
    (secret / "key").write_text("s3cr3t")
    other = another_runs_pod(cluster)
    cluster.mount("other-run", CSI, WS_PV, {"theirs.csv": b"not yours\n"})
    cluster.mount("train", CSI, WS_PV)
    escape = cluster.pods_dir / cluster.uid("make-data") / "volumes" / CSI / WS_PV
    escape.mkdir(parents=True)
    (escape / "mount").symlink_to(secret)
    forged = {
        "another pod's uid": (cluster.volume("make-data", "pvc-ws", pod_uid=other["metadata"]["uid"]), "has uid"),
        "a pod on another node": (cluster.volume("train", "pvc-ws"), "runs on node ip-10-0-2-33.ec2.internal"),
        "a pod of another run": (cluster.volume("other-run", "pvc-ws"), "is not a pod of run"),
        "a claim the pod does not mount": (cluster.volume("make-data", "pvc-ws", pvc="workspace-nb-1"), "not claim"),
        "a symlink out of the volume": (cluster.volume("make-data", "pvc-ws"), "through a symlink"),
        "a path": (VolumeRef(name="ws", path=f"{escape}/../../../../../secret-outside"), "lacks pod_name"),
    }
    events = {what: step_started(cluster, (volume,), attempt=i) for i, (what, (volume, _)) in enumerate(forged.items())}
    async with running(build(settings, api_client=fake_kube.api_client)):
        for event in events.values():
            await bus.publish(js, event)
        dead = await dead_letters(js, len(events))
        await settled(js, DURABLE)
    reasons = {json.loads(m.data)["event_id"]: m.headers[bus.DEAD_REASON] for m in dead}
    for what, event in events.items():
        assert forged[what][1] in reasons[event.event_id], f"{what}: {reasons[event.event_id]}"
        assert "cannot be snapshotted" in reasons[event.event_id]
    assert (await js.stream_info(streams.SNAPSHOTS.name)).state.messages == 0  # no SnapshotCompleted nor Failed
    assert await stored_snapshots(settings.repository_url) == []


async def stored_snapshots(url: str) -> list[SnapshotInfo]:
    """The snapshots in the repository at ``url`` (none if nothing ever created it)."""
    try:
        repo = await open_repository(url)
    except RepositoryNotFound:
        return []
    async with repo:
        return await repo.list_snapshots()
