"""The cluster flow, driven by rok's own services the way a cluster drives them: a KFP run's Argo ``Workflow`` in
the fake API server, its pods run by the fake cluster's kubelet, and the real pipeline-watcher, snapshotter,
registry and restorer over a real nats-server, with a real S3 store.

The run starts with its ``create-volume-N`` tasks, pods whose command is ``rok clone-pvc``: they name the notebook
pod, so the watcher starts the run from the notebook's volumes, the snapshotter takes the run's initial version of
them, and each task asks the registry (over HTTP, with its pod's service account token) for a clone of its volume
into a PVC of the run, which the restorer makes (a restore pod that the kubelet runs for real). The steps mount the
clones, each held by the real step guard (the watcher's webhook adds it, the kubelet runs it as a native sidecar)
until its before-snapshot is committed, and its pod's end until its after-snapshot is. Then a middle step's
after-state comes back as a notebook server through the registry's restore API: every object checked field by field
against the API's schemas and the Notebook CRD's, and the new server the one the run came from again.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kfp_server_api
import pytest
from rok_pipeline_watcher.guard.admission import GuardConfig, review
from rok_pipeline_watcher.main import serve as serve_watcher
from rok_pipeline_watcher.settings import WatcherSettings
from rok_registry.main import build as build_registry
from rok_registry.settings import RegistrySettings
from rok_restorer.main import build as build_restorer
from rok_restorer.settings import RestorerSettings
from rok_snapshotter.main import build as build_snapshotter
from rok_snapshotter.settings import SnapshotterSettings
from rokcli.clones import clone_name
from rokcli.restore import RestoreAsked
from rokcommon.notebooks import notebook_server
from rokcommon.registry_contract import Version
from rokcommon.registry_http import Remote
from roktesting.kfp_api import FakeKfp
from roktesting.kubecluster import Cluster, mutating_webhook, schema_errors
from roktesting.kubeflow import add_profile, install_profile_roles
from roktesting.nats import NatsServer, running
from roktesting.ports import free_port

from . import crds, pipeline_steps
from .trees import same_tree

NS = "kubeflow-user-example-com"
USER = "user@example.com"
NODE = "node-a"
BIN = Path(sys.executable).parent
IMAGE = "registry.example.com/team/jupyter-torch:2.3"
RESOURCES = {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}}
ENV = [
    {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.kubeflow:5000"},
    {"name": "PYTHONUNBUFFERED", "value": "1"},
]
# the notebook's volumes: its workspace (as the notebook form names it) and a data volume mounted where the user chose
NOTEBOOK_CLAIMS = {
    "my-notebook-workspace": ("/home/jovyan", "5Gi", "standard", "ReadWriteOnce"),
    "datasets": ("/mnt/datasets", "20Gi", "nfs", "ReadWriteMany"),
}
RUN_ID = "7f3a0c9e-77b1-4d3e-9a4f-5b6c7d8e9f00"
EXPERIMENT = "churn"
# the run's clones of them, one per volume, the workspace first (create-volume-1, create-volume-2: rok clone-pvc)
CLONES = tuple(clone_name(claim, RUN_ID) for claim in NOTEBOOK_CLAIMS)
STEPS = pipeline_steps.STEPS  # prepare, train, evaluate
MIDDLE = "train"


def _notebook_pod() -> dict[str, Any]:
    """The notebook server's pod as its controller made it."""
    mounts = [{"name": f"vol-{i}", "mountPath": v[0]} for i, v in enumerate(NOTEBOOK_CLAIMS.values())]
    volumes = [{"name": f"vol-{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(NOTEBOOK_CLAIMS)]
    return {
        "metadata": {
            "name": "my-notebook-0",
            "namespace": NS,
            "labels": {"notebook-name": "my-notebook", "app": "my-notebook"},
            "annotations": {"notebooks.kubeflow.org/server-type": "jupyter"},
        },
        "spec": {
            "serviceAccountName": "default-editor",
            "containers": [
                {"name": "my-notebook", "image": IMAGE, "env": ENV, "resources": RESOURCES, "volumeMounts": mounts},
                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22"},
            ],
            "volumes": volumes,
        },
    }


def _claim(name: str, size: str, storage_class: str, mode: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "accessModes": [mode],
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": size}},
        },
    }


def _workflow(registry_url: str, step_script: Path) -> dict[str, Any]:
    """The run's Argo Workflow (KFP v1 layout): create-volume-1, create-volume-2 (``rok clone-pvc``, as
    ``rok compile`` and ``rok_pipeline_watcher.kfp.clones`` make them), then the three steps on the clones."""
    clone_tasks = []
    for position, claim in enumerate(NOTEBOOK_CLAIMS, start=1):
        clone_tasks.append(
            {
                "name": f"create-volume-{position}",
                "metadata": {"annotations": {"rok/notebook-pod": "my-notebook-0"}},
                "container": {
                    "image": "rok-pipeline-watcher:9.9",
                    "command": ["rok", "clone-pvc"],
                    "args": [claim, "--run", RUN_ID, "--name-file", "/tmp/outputs/name/data", "--timeout", "60"],
                    "env": [{"name": "ROK_REGISTRY_URL", "value": registry_url}],
                    "volumeMounts": [{"name": "outputs", "mountPath": "/tmp/outputs"}],
                },
                "volumes": [{"name": "outputs", "emptyDir": {}}],
            }
        )
    mounts = [
        {"name": "workspace", "mountPath": NOTEBOOK_CLAIMS["my-notebook-workspace"][0]},
        {"name": "data", "mountPath": NOTEBOOK_CLAIMS["datasets"][0]},
    ]
    steps = [
        {
            "name": name,
            "container": {
                "image": "python:3.11",
                "command": [
                    sys.executable,
                    str(step_script),
                    str(number),
                    mounts[0]["mountPath"],
                    mounts[1]["mountPath"],
                ],
                "volumeMounts": mounts,
            },
        }
        for number, name in enumerate(STEPS, start=1)
    ]
    templates = [*clone_tasks, *steps]
    return {
        "metadata": {
            "name": "churn-7f3a",
            "labels": {"pipeline/runid": RUN_ID},
            "annotations": {"pipelines.kubeflow.org/run_name": "churn nightly"},
        },
        "spec": {
            "entrypoint": "churn",
            "serviceAccountName": "default-editor",
            "volumes": [
                {"name": "workspace", "persistentVolumeClaim": {"claimName": CLONES[0]}},
                {"name": "data", "persistentVolumeClaim": {"claimName": CLONES[1]}},
            ],
            "templates": [
                {
                    "name": "churn",
                    "steps": [  # the clone tasks side by side, as KFP runs tasks that need nothing of each other
                        [{"name": t["name"], "template": t["name"]} for t in clone_tasks],
                        *([{"name": t["name"], "template": t["name"]}] for t in steps),
                    ],
                },
                *templates,
            ],
        },
    }


@pytest.fixture
def kube(fake_kube):
    install_profile_roles(fake_kube)
    add_profile(fake_kube, NS, USER)
    fake_kube.create(
        "/api/v1/namespaces/rok/pods",
        {
            "metadata": {"name": "rok-snapshotter-a", "labels": {"app.kubernetes.io/name": "rok-snapshotter"}},
            "spec": {"nodeName": NODE, "containers": [{"name": "snapshotter", "image": "rok/snapshotter"}]},
            "status": {"phase": "Running"},
        },
    )
    return fake_kube


@pytest.fixture
def kfp(fake_kfp: FakeKfp) -> FakeKfp:
    """The KFP API knows the run and its experiment (what the watcher asks of it)."""
    experiment = kfp_server_api.V2beta1Experiment(experiment_id="e-1", display_name=EXPERIMENT, namespace=NS)
    fake_kfp.experiments["e-1"] = experiment
    fake_kfp.runs[RUN_ID] = kfp_server_api.V2beta1Run(
        run_id=RUN_ID,
        experiment_id="e-1",
        display_name="churn nightly",
        pipeline_spec={"pipelineInfo": {"name": "churn"}},
    )
    return fake_kfp


@contextlib.asynccontextmanager
async def services(
    kube: Any, nats: NatsServer, kfp: FakeKfp, repository: str, root: Path, volumes: Path, monkeypatch: Any
) -> AsyncIterator[Any]:
    """The four services in this process, as a cluster runs them: the registry (HTTP too), the snapshotter of
    ``NODE`` (its hostPath PVs under ``volumes``), the restorer with its Kubernetes side, the watcher."""
    root.mkdir(parents=True, exist_ok=True)
    kubeconfig = kube.write_kubeconfig(root / "kubeconfig")
    common = dict(
        nats_url=nats.url,
        repository=repository,
        kube="kubeconfig",
        kubeconfig=kubeconfig,
        log_format="text",
        retry_delay=0.2,
        ack_wait=10.0,
        max_deliver=3,
    )
    for name, value in {
        "ROK_KUBE": "kubeconfig",
        "ROK_KUBECONFIG": str(kubeconfig),
        "ROK_RESTORE_IMAGE": "rok/restorer:9.9",
        "ROK_RESTORE_POLL_INTERVAL": "0.05",
        "ROK_RESTORE_POD_TIMEOUT": "30",
    }.items():  # the restorer's Kubernetes side reads its own settings
        monkeypatch.setenv(name, value)
    registry = build_registry(
        RegistrySettings(
            **common,
            auth="cluster",
            access_cache_seconds=0.0,
            state_dir=root / "registry",
            registry_port=free_port(),
        ),
        graceful_timeout=2.0,
    )
    restorer = build_restorer(
        RestorerSettings(**common, auth="cluster", access_cache_seconds=0.0, state_dir=root / "restorer")
    )
    snapshotter = build_snapshotter(
        SnapshotterSettings(**common, node_name=NODE, volume_roots=str(volumes), state_dir=root / "snapshotter")
    )
    token = root / "kfp-token"  # the watcher's projected token for the KFP API (multi-user Kubeflow)
    token.write_text(f"{kfp.token}\n")
    watcher = WatcherSettings(
        nats_url=nats.url,
        kube="kubeconfig",
        kubeconfig=kubeconfig,
        kfp_api_url=kfp.url,
        kfp_api_token_file=token,
        retry_delay=0.2,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        await registry.start_storage()
        stack.push_async_callback(registry.stop_storage)
        for service in (registry.service, snapshotter, restorer):
            await stack.enter_async_context(running(service))
        watching = asyncio.create_task(serve_watcher(watcher, stop, ready=ready))
        await asyncio.wait_for(ready.wait(), 15)
        try:
            yield registry
        finally:
            stop.set()
            await asyncio.wait_for(watching, 15)


async def test_a_run_from_its_clones_to_a_middle_steps_notebook_server(
    kube, kfp, nats_server, s3_repo_url, tmp_path, monkeypatch
):
    guard = GuardConfig(image="rok-guard:9.9", nats_url=nats_server.url, before_timeout=30, after_timeout=30)
    mutating_webhook(kube, "pods", lambda asked: review(asked, guard))  # the watcher's step-guard webhook
    claims = {}
    for name, (_, size, storage_class, mode) in NOTEBOOK_CLAIMS.items():
        claims[name] = kube.create(
            f"/api/v1/namespaces/{NS}/persistentvolumeclaims", _claim(name, size, storage_class, mode)
        )

    def pod_files(pod: dict[str, Any], own: Path) -> dict[str, str]:
        """What a pod finds in its own filesystem: its service account's token and namespace, its own /tmp."""
        account = pod["spec"].get("serviceAccountName") or "default"
        (own / "tmp").mkdir(parents=True, exist_ok=True)
        return {
            "ROK_TOKEN": kube.tokens.service_account(pod["metadata"]["namespace"], account),
            "ROK_NAMESPACE": pod["metadata"]["namespace"],
            "ROK_GUARD_READY_FILE": str(own / "tmp" / "rok-guard-ready"),
        }

    cluster = Cluster(
        kube,
        tmp_path / "node",
        node=NODE,
        environment={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path)},
        namespaces=(NS,),
        pod_environment=pod_files,
    )
    expected = {step: pipeline_steps.state_after(tmp_path / "expected", step) for step in range(len(STEPS) + 1)}
    with cluster.running():
        notebook_dirs = [_bound(cluster, name) for name in NOTEBOOK_CLAIMS]
        pipeline_steps.apply(0, *notebook_dirs)  # what the user had in the notebook
        for state in expected.values():  # a new volume's lost+found: each state of the volumes has it
            for made in state:
                (made / "lost+found").mkdir(exist_ok=True)
        kube.create(f"/api/v1/namespaces/{NS}/pods", _notebook_pod())
        async with services(
            kube, nats_server, kfp, s3_repo_url, tmp_path / "services", cluster.volumes.root, monkeypatch
        ) as registry:
            web = registry.http.url
            workflow = kube.create(
                f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows",
                _workflow(web, Path(pipeline_steps.__file__)),
            )
            ended = await _eventually(
                lambda: kube.get(f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows/churn-7f3a"),
                ("Succeeded", "Failed"),
                timeout=60,
            )
            assert ended["status"]["phase"] == "Succeeded", _why(cluster, ended)
            versions = await _versions(registry, final=True)

            # --- the clones: PVCs of the run, as the originals, holding what the notebook held -----------------
            for clone, (_, size, storage_class, mode) in zip(CLONES, NOTEBOOK_CLAIMS.values(), strict=True):
                made_clone = kube.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{clone}")
                assert schema_errors(made_clone, "V1PersistentVolumeClaim") == [], clone
                assert made_clone["status"]["phase"] == "Bound"
                assert made_clone["metadata"]["labels"]["rok.kubeflow.org/run"] == RUN_ID  # retention follows it
                spec = made_clone["spec"]
                assert (spec["resources"]["requests"]["storage"], spec["accessModes"], spec["storageClassName"]) == (
                    size,
                    [mode],
                    storage_class,
                )
            # the steps wrote into the clones (each began from the notebook's content): they hold the last state now
            for clone, state in zip(CLONES, expected[len(STEPS)], strict=True):
                assert same_tree(state, cluster.claim_directory(NS, clone)), clone

            # --- the registry's versions: initial of the notebook's volumes, before/after of each step ---------
            original = notebook_server(_notebook_pod(), claims)
            initial = versions[("initial", "initial")]
            assert initial.volumes == tuple(NOTEBOOK_CLAIMS)
            assert [m.role for m in initial.members] == ["workspace", "data"]
            assert initial.notebook == original  # image, resources, env, each volume's mount path and claim
            assert [(v.claim, v.mount_path) for v in original.volumes] == [
                (claim, path) for claim, (path, *_) in NOTEBOOK_CLAIMS.items()
            ]
            assert [_content(m) for m in initial.members] == [_held(d) for d in expected[0]]
            for number, step in enumerate(STEPS, start=1):
                for phase, state in (("before", expected[number - 1]), ("after", expected[number])):
                    version = versions[(step, phase)]
                    assert version.volumes == CLONES, (step, phase)
                    assert version.status == "complete", (step, phase)
                    assert version.workflow_uid == workflow["metadata"]["uid"]
                    # the step guard held the step until its before-snapshot, and its end until its after-snapshot
                    assert not version.best_effort, (step, phase)
                    assert [_content(m) for m in version.members] == [_held(d) for d in state], (step, phase)
            assert "final" in versions[(STEPS[-1], "after")].tags
            (bucket,) = await registry.queries.list_buckets(NS)  # the run's experiment, as the KFP API names it
            assert bucket.experiment == EXPERIMENT
            assert {v.bucket for v in versions.values()} == {bucket.name}

            # --- the restore of the middle step as a notebook server, asked as the user -------------------------
            middle = versions[(MIDDLE, "after")].url
            user = Remote(web, kube.tokens.add(USER, ("system:authenticated",)), poll=0.1)
            asked = RestoreAsked(middle, "notebook", "back-to-train", namespace=NS)
            outcome = await asyncio.to_thread(user.restore, asked, 60)
            assert outcome["state"] == "completed", outcome
            pod = await _eventually(lambda: kube.get(f"/api/v1/namespaces/{NS}/pods/back-to-train-0"), ("Running",))

    # --- the new notebook server: the original again --------------------------------------------------------------
    notebook = kube.get(f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks/back-to-train")
    crds.validate(notebook)
    (container,) = notebook["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    assert container["resources"] == RESOURCES
    assert container["env"] == ENV
    assert container["volumeMounts"] == [
        {"name": "back-to-train-workspace", "mountPath": "/home/jovyan"},
        {"name": f"back-to-train-{CLONES[1]}", "mountPath": "/mnt/datasets"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    assert notebook["spec"]["template"]["spec"]["serviceAccountName"] == "default-editor"
    assert schema_errors(pod, "V1Pod") == []
    assert pod["status"]["phase"] == "Running"  # its claims were bound, and filled, before it could start
    assert pod["spec"]["containers"][0]["image"] == IMAGE

    # --- its claims: the originals' size, access mode and class; bound; holding the step's state -----------------
    after_middle = dict(zip(CLONES, expected[STEPS.index(MIDDLE) + 1], strict=True))
    wanted = {
        "back-to-train-workspace": (CLONES[0], "5Gi", "ReadWriteOnce", "standard"),
        f"back-to-train-{CLONES[1]}": (CLONES[1], "20Gi", "ReadWriteMany", "nfs"),
    }
    made = {
        k[3]: o
        for k, o in kube.objects.items()
        if k[:3] == ("api/v1", "persistentvolumeclaims", NS) and k[3] not in (*NOTEBOOK_CLAIMS, *CLONES)
    }
    assert set(made) == set(wanted)  # no staging claim is left
    for name, (volume, size, mode, storage_class) in wanted.items():
        claim = made[name]
        assert schema_errors(claim, "V1PersistentVolumeClaim") == [], name
        assert claim["status"]["phase"] == "Bound"
        assert claim["spec"]["resources"]["requests"]["storage"] == size
        assert claim["spec"]["accessModes"] == [mode]
        assert claim["spec"]["storageClassName"] == storage_class
        assert same_tree(after_middle[volume], cluster.claim_directory(NS, name)), name
    assert not same_tree(expected[len(STEPS)][0], cluster.claim_directory(NS, "back-to-train-workspace"))

    # --- every pod that ran: the run's tasks and steps, the restore pods; checked against the Pod schema --------
    ran = {r["pod"]["metadata"]["name"]: r for r in cluster.kubelet.ran.values()}
    assert all(r["code"] == 0 for r in ran.values()), {n: r["message"] for n, r in ran.items() if r["code"]}
    assert {n for n in ran if n.startswith("rok-restore-")} == {
        "rok-restore-back-to-train-workspace",
        f"rok-restore-back-to-train-{CLONES[1]}",
        *(f"rok-restore-{clone}" for clone in CLONES),
    }
    for run in ran.values():
        assert schema_errors(run["pod"], "V1Pod") == [], run["pod"]["metadata"]["name"]
    run_pods = [r["pod"] for r in ran.values() if r["pod"]["metadata"]["labels"].get("pipeline/runid") == RUN_ID]
    by_task = {p["metadata"]["annotations"]["workflows.argoproj.io/node-name"].split(".")[-1]: p for p in run_pods}
    assert set(by_task) == {"create-volume-1", "create-volume-2", *STEPS}
    for step in STEPS:  # each step held by the step guard the watcher's webhook added
        assert [c["name"] for c in by_task[step]["spec"]["initContainers"]] == ["rok-guard"]
    assert "initContainers" not in by_task["create-volume-1"]["spec"]  # a clone task mounts no PVC: no guard
    assert not [k for k in kube.objects if k[1] == "pods" and k[3].startswith("rok-restore-")]  # all gone

    # --- the notebook's own claims: the same objects, and never written by the run -----------------------------
    for name in NOTEBOOK_CLAIMS:
        assert (
            kube.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{name}")["metadata"]["uid"]
            == claims[name]["metadata"]["uid"]
        )
    for directory, state in zip(notebook_dirs, expected[0], strict=True):
        assert same_tree(state, directory), directory


def _held(directory: Path) -> tuple[int, int]:
    """Files and bytes under ``directory``."""
    files = [p for p in directory.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _content(member: Any) -> tuple[int, int]:
    return member.files, member.size


def _bound(cluster: Cluster, claim: str) -> Path:
    for _ in range(500):
        with contextlib.suppress(Exception):
            return cluster.claim_directory(NS, claim)
        time.sleep(0.01)
    raise AssertionError(f"claim {claim} never bound")


async def _versions(registry: Any, *, final: bool) -> dict[tuple[str, str], Version]:
    """The run's versions as the registry has them, by (step or "initial", phase), once all are committed."""
    queries = registry.queries
    for _ in range(300):
        buckets = await queries.list_buckets(NS)
        files = await queries.list_files(NS, buckets[0].name) if buckets else []
        found = await queries.list_versions(NS, buckets[0].name, files[0].name) if files else []
        versions = {(v.step_name or "initial", v.phase): v for v in found}
        done = len(versions) == 1 + 2 * len(STEPS) and all(v.committed for v in found)
        if done and (not final or "final" in versions[(STEPS[-1], "after")].tags):
            return versions
        await asyncio.sleep(0.05)
    raise AssertionError(f"the registry has not every version of the run: {sorted(versions)}")


async def _eventually(read: Any, phases: tuple[str, ...], timeout: float = 15) -> dict[str, Any]:
    found: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = read()
        except Exception:
            found = {}
        if (found.get("status") or {}).get("phase") in phases:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {' or '.join(phases)}: {found.get('status')}")


def _why(cluster: Cluster, workflow: dict[str, Any]) -> str:
    failed = {n: (r["code"], r["message"][-500:]) for n, r in cluster.kubelet.ran.items() if r["code"]}
    return f"{workflow.get('status')}; failed pods: {failed}"
