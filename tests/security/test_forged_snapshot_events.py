"""Forged run and step events do not make the snapshotter read what is not a volume.

The attacker can publish run and step events on the bus (a holder of the local runner's or the watcher's NATS
credentials, say) and hopes to restore a secret from the version a forged event would make:

* on one machine, a ``RunStarted`` whose volume climbs out of the notebook's directory
  (``…/ws/../../../secret-outside``): the snapshotter and the registry run as their own processes on a real
  nats-server, as ``rok up`` runs them; the forged event is dead-lettered with the reason, nothing is
  snapshotted or announced for it and no version is committed, while a genuine run published beside it is;
* in a cluster, events naming a path under the kubelet's directory, or another pod's directory: the snapshotter
  process checks them with the (fake) Kubernetes API and dead-letters them, while a genuine step's claim is read.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from rokcommon import bus, streams
from rokcommon.events import (
    RunRef,
    RunStarted,
    SnapshotCompleted,
    StepRef,
    StepStarted,
    VersionCommitted,
    VolumeRef,
    model_for_subject,
)
from rokcommon.versions import VersionKey
from roktesting.kubernetes import FakeKube
from roktesting.nats import NatsServer
from roktesting.ports import free_port

NODE = "node-1"
ROOT = Path(__file__).resolve().parents[2]
# A KFP v2 run's objects as a cluster holds them (the snapshotter's test fixtures; their _source says whence).
CLUSTER = json.loads((ROOT / "services/snapshotter/tests/fixtures/cluster_objects.json").read_text())
CLUSTER_NODE = "ip-10-0-1-17.ec2.internal"


@contextmanager
def service(name: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m rok_<name>`` with ``env``, its JSON log in ``log``; terminated at the end."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", f"rok_{name}"], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def ready(name: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Wait for the service's ``<name> ready`` log line."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("message") == f"{name} ready":
                return
        assert process.poll() is None, f"{name} exited: {log.read_text()[-3000:]}"
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never became ready: {log.read_text()[-3000:]}")


@asynccontextmanager
async def local_services(nats_server: NatsServer, root: Path, roots: Path) -> AsyncIterator[None]:
    """The snapshotter and the registry of one machine, reading volumes only under ``roots``."""
    common = {
        "ROK_NATS_URL": nats_server.url,
        "ROK_NODE_NAME": NODE,
        "ROK_VOLUME_ROOTS": str(roots),
        "ROK_REPOSITORY": (root / "repo").as_uri(),
        "ROK_REGISTRY_PORT": str(free_port()),
        "ROK_LOG_FORMAT": "json",
        "ROK_RETRY_DELAY": "0.2",
    }
    with (
        service("snapshotter", common | {"ROK_STATE_DIR": str(root / "snapshotter")}, root / "snapshotter.log") as s,
        service("registry", common | {"ROK_STATE_DIR": str(root / "registry")}, root / "registry.log") as r,
    ):
        await ready("snapshotter", s, root / "snapshotter.log")
        await ready("registry", r, root / "registry.log")
        yield


async def dead_letters(js: JetStreamContext, count: int) -> list[Msg]:
    """The first ``count`` dead letters, waiting for them."""
    letters = await js.pull_subscribe("rok.dlq.>", stream=streams.DLQ.name)
    found: list[Msg] = []
    while len(found) < count:
        found += await letters.fetch(count - len(found), timeout=30)
    return found


def run_started(workflow_uid: str, path: str) -> RunStarted:
    return RunStarted.make(
        run=RunRef(namespace="local", run_id=workflow_uid, workflow_uid=workflow_uid),
        run_name=workflow_uid,
        pipeline_name="p",
        node=NODE,
        volumes=(VolumeRef(name="workspace", role="workspace", path=path),),
        started_at=datetime.now(UTC),
    )


async def stored(js: JetStreamContext, stream: str) -> list[object]:
    """Every event stored in ``stream`` so far, decoded."""
    info = await js.stream_info(stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        msg = await js.get_msg(stream, seq)
        found.append(model_for_subject(msg.subject).decode(msg.data or b""))
    return found


async def test_a_forged_run_start_climbing_out_of_the_notebook_is_dead_lettered_and_gets_no_version(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    workspace = home / "notebook" / "ws"
    workspace.mkdir(parents=True)
    (workspace / "train.py").write_text("print('train')\n")
    secret = tmp_path / "secret-outside"
    secret.mkdir()
    (secret / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    forged = run_started("wf-forged", f"{workspace}/../../../secret-outside")
    genuine = run_started("wf-genuine", str(workspace))

    async with local_services(nats_server, tmp_path, home):
        committed = await js.subscribe("rok.version.committed.v1", stream=streams.VERSIONS.name, ordered_consumer=True)
        await bus.publish(js, forged)
        await bus.publish(js, genuine)
        [letter] = await dead_letters(js, 1)
        first_commit = await committed.next_msg(timeout=30)

    commit = VersionCommitted.decode(first_commit.data)
    assert json.loads(letter.data)["event_id"] == forged.event_id
    reason = letter.headers[bus.DEAD_REASON]
    assert "secret-outside' is not a plain absolute path (it climbs with '..'); refusing to read it" in reason
    assert commit.key == VersionKey.initial("wf-genuine")
    snapshots = await stored(js, streams.SNAPSHOTS.name)
    assert [getattr(e, "run", None) for e in snapshots] == [genuine.run]  # nothing, not even a failure, for it
    versions = await stored(js, streams.VERSIONS.name)
    assert [e.key for e in versions if isinstance(e, VersionCommitted)] == [VersionKey.initial("wf-genuine")]


def kubeconfig(kube: FakeKube, path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
                "users": [{"name": "snapshotter", "user": {"token": "fake-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "snapshotter"}}],
                "current-context": "fake",
            }
        )
    )
    return path


def cluster_run(kube: FakeKube) -> tuple[RunRef, dict[str, dict[str, object]]]:
    """The run's workflow, pods, claims and PVs in ``kube``; the run and its pods by name."""
    namespace = CLUSTER["workflow"]["metadata"]["namespace"]
    workflow = kube.create(f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflows", CLUSTER["workflow"])
    pods = {}
    for pod in copy.deepcopy(CLUSTER["pods"]):
        for owner in pod["metadata"].get("ownerReferences") or ():
            owner["uid"] = workflow["metadata"]["uid"] if owner["kind"] == "Workflow" else owner["uid"]
        created = kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
        pods[created["metadata"]["name"]] = created
    for claim in CLUSTER["claims"]:
        kube.create(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", claim)
    for pv in CLUSTER["volumes"]:
        kube.create("/api/v1/persistentvolumes", pv)
    run_id = workflow["metadata"]["labels"]["pipeline/runid"]
    return RunRef(namespace=namespace, run_id=run_id, workflow_uid=workflow["metadata"]["uid"]), pods


async def test_forged_events_in_a_cluster_are_checked_with_the_kubernetes_api_and_dead_lettered(
    nats_server: NatsServer, js: JetStreamContext, fake_kube: FakeKube, tmp_path: Path
) -> None:
    run, pods = cluster_run(fake_kube)
    step_pod = pods["ml-pipeline-8xfss-system-container-impl-579787280"]  # make-data, on this node
    other_pod = pods["nb-1-0"]  # the notebook's pod, on this node too
    pv = "pvc-5b6f0c7e-1d2a-4e3b-8c9d-0a1b2c3d4e01"
    kubelet_pods = tmp_path / "kubelet" / "pods"
    mine = kubelet_pods / step_pod["metadata"]["uid"] / "volumes" / "kubernetes.io~csi" / pv / "mount"
    mine.mkdir(parents=True)
    (mine / "data.csv").write_text("a,b\n")
    theirs = kubelet_pods / other_pod["metadata"]["uid"] / "volumes" / "kubernetes.io~csi" / pv / "mount"
    theirs.mkdir(parents=True)
    (theirs / "notes.md").write_text("the notebook's own files\n")
    step = StepRef(run=run, step_id=step_pod["metadata"]["annotations"]["workflows.argoproj.io/node-id"], name="a")

    def started(volume: VolumeRef, attempt: int) -> StepStarted:
        return StepStarted.make(
            step=step.model_copy(update={"attempt": attempt}),
            node=CLUSTER_NODE,
            volumes=(volume,),
            started_at=datetime.now(UTC),
        )

    claimed = {
        "name": "ws",
        "role": "workspace",
        "pvc": "ws-nb-1-run-8xfss",
        "pod_name": step_pod["metadata"]["name"],
        "pod_uid": step_pod["metadata"]["uid"],
        "pod_volume": "pvc-ws",
    }
    genuine = started(VolumeRef(**claimed), 0)
    by_path = started(VolumeRef(name="ws", path=f"{kubelet_pods}/../../../etc"), 1)
    other_uid = started(VolumeRef(**(claimed | {"pod_uid": other_pod["metadata"]["uid"]})), 2)
    env = {
        "ROK_NATS_URL": nats_server.url,
        "ROK_NODE_NAME": CLUSTER_NODE,
        "ROK_KUBE": "kubeconfig",
        "ROK_KUBECONFIG": str(kubeconfig(fake_kube, tmp_path / "kubeconfig")),
        "ROK_KUBELET_PODS_DIR": str(kubelet_pods),
        "ROK_STATE_DIR": str(tmp_path / "snapshotter"),
        "ROK_REPOSITORY": (tmp_path / "repo").as_uri(),
        "ROK_LOG_FORMAT": "json",
    }
    with service("snapshotter", env, tmp_path / "snapshotter.log") as process:
        await ready("snapshotter", process, tmp_path / "snapshotter.log")
        announced = await js.subscribe("rok.snapshot.>", stream=streams.SNAPSHOTS.name, ordered_consumer=True)
        for event in (by_path, other_uid, genuine):
            await bus.publish(js, event)
        dead = await dead_letters(js, 2)
        done = SnapshotCompleted.decode((await announced.next_msg(timeout=30)).data)

    reasons = {json.loads(m.data)["event_id"]: m.headers[bus.DEAD_REASON] for m in dead}
    assert "lacks pod_name, pod_uid, pod_volume, pvc: in a cluster" in reasons[by_path.event_id]
    assert "the event names another pod's directory" in reasons[other_uid.event_id]
    assert (done.run, done.step, done.volume.name) == (run, genuine.step, "ws")
    assert (await js.stream_info(streams.SNAPSHOTS.name)).state.messages == 1  # only the genuine step's
