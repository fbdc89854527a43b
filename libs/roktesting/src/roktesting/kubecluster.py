"""What a cluster does beside its API server, played against :class:`~roktesting.kubernetes.FakeKube`: volumes
bind, workflows run their steps, pods run, notebook servers start.

- :class:`Volumes` is the PV controller with a dynamic provisioner: a new PersistentVolumeClaim without
  ``spec.volumeName`` gets a PersistentVolume of its size, access modes and class (a ``hostPath`` directory
  under ``root``), and both are ``Bound``; a claim that names a volume binds to it if the volume's ``claimRef``
  is free or names this claim; a volume whose claim is gone is ``Released``, and deleted with its directory if
  its reclaim policy is ``Delete``, kept if ``Retain``.
- :class:`~roktesting.argo.Workflows` is Argo's workflow controller for ``steps`` workflows (KFP v1's layout):
  it creates each step's pod as Argo does (owner reference, labels, node annotations) and keeps
  ``status.nodes`` and the workflow's phase in step with the pods.
- :class:`Kubelet` runs pods: a pod stays ``Pending`` while any claim it mounts is not ``Bound``; then it is
  scheduled on the node (``spec.nodeName``, still ``Pending``), its native sidecars (``initContainers`` with
  ``restartPolicy: Always``) are started and their ``startupProbe`` (``exec``) awaited, and its container's
  ``command`` runs for real (each mount path in the command, or a path under one, replaced by the volume's
  directory, an ``emptyDir`` being a directory of the pod's own; the termination message path by a file; the
  environment from the container's ``env``, its Secrets' ``envFrom`` and ``pod_environment``, what the pod would
  find in its own filesystem). Once the container has ended the pod is reported ``Running`` with it terminated
  while its sidecars are stopped (SIGTERM) and awaited, then ``Succeeded`` or ``Failed`` with the container's
  termination message, as a kubelet reports it; a pod without a command (a notebook server) is ``Running``.
- :class:`Notebooks` is the notebook controller: a ``Notebook`` gets its pod ``<name>-0`` (label
  ``notebook-name``), made from ``spec.template``.
- :func:`mutating_webhook` sends every new object of a kind through an admission review function and applies
  the JSON patch it answers, as the API server does with a mutating webhook.
- :func:`schema_errors` checks an object field by field against the official client's models of the API's
  schema (``V1Pod``, ``V1PersistentVolumeClaim``, …): an unknown field or a wrong type is named, as the API
  server would drop or refuse it.

:class:`Cluster` runs the controllers and the kubelet on one thread (a reconcile every few milliseconds) while
its ``with`` lasts.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roktesting.argo import Workflows
from roktesting.kubernetes import FakeKube, _json_patch

__all__ = ["Cluster", "Kubelet", "Notebooks", "Volumes", "mutating_webhook", "schema_errors"]

CLAIMS, VOLUMES_API, PODS = "persistentvolumeclaims", "/api/v1/persistentvolumes", "pods"
NOTEBOOKS_API = "apis/kubeflow.org/v1"


def _objects(kube: FakeKube, api: str, plural: str) -> list[dict[str, Any]]:
    with kube._lock:
        return [copy.deepcopy(o) for k, o in kube.objects.items() if k[0] == api and k[1] == plural]


def _path(obj: dict[str, Any], plural: str, api: str = "api/v1") -> str:
    meta = obj["metadata"]
    where = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
    return f"/{api}{where}/{plural}/{meta['name']}"


def _gone(call: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):  # deleted meanwhile: nothing left to update
        call()


@dataclass
class Volumes:
    """Binds claims to volumes and provisions new ones (a directory each under ``root``)."""

    kube: FakeKube
    root: Path
    provisioned: list[str] = field(default_factory=list)

    def reconcile(self) -> None:
        claims = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in _objects(self.kube, "api/v1", CLAIMS)}
        volumes = {v["metadata"]["name"]: v for v in _objects(self.kube, "api/v1", "persistentvolumes")}
        for volume in volumes.values():
            self._release(volume, claims)
        for claim in claims.values():
            if (claim.get("status") or {}).get("phase") == "Bound" or claim["metadata"].get("deletionTimestamp"):
                continue
            wanted = claim["spec"].get("volumeName")
            if wanted:
                reserved = volumes.get(wanted)
                if reserved is not None and self._may_bind(reserved, claim):
                    self._bind(reserved, claim)
            else:
                self._bind(self._provision(claim), claim)

    def directory(self, volume_name: str) -> Path:
        return self.root / volume_name

    def _may_bind(self, volume: dict[str, Any], claim: dict[str, Any]) -> bool:
        ref = volume["spec"].get("claimRef")
        if not ref:
            return True
        meta = claim["metadata"]
        same = (ref.get("namespace"), ref.get("name")) == (meta["namespace"], meta["name"])
        return same and ref.get("uid") in (None, meta["uid"])

    def _provision(self, claim: dict[str, Any]) -> dict[str, Any]:
        name = f"pvc-{claim['metadata']['uid']}"
        self.directory(name).mkdir(parents=True, exist_ok=True)
        (self.directory(name) / "lost+found").mkdir(exist_ok=True)  # what a new ext4 volume holds
        spec = claim["spec"]
        volume = {
            "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": "fake.csi.rok"}},
            "spec": {
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": spec.get("storageClassName") or "standard",
                "volumeMode": "Filesystem",
                "hostPath": {"path": str(self.directory(name))},
            },
        }
        self.provisioned.append(name)
        return self.kube.create(VOLUMES_API, volume)

    def _bind(self, volume: dict[str, Any], claim: dict[str, Any]) -> None:
        meta = claim["metadata"]
        ref = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
        }
        self.kube.patch(
            f"{VOLUMES_API}/{volume['metadata']['name']}", {"spec": {"claimRef": ref}, "status": {"phase": "Bound"}}
        )
        status = {
            "phase": "Bound",
            "accessModes": volume["spec"]["accessModes"],
            "capacity": volume["spec"]["capacity"],
        }
        _gone(
            lambda: self.kube.patch(
                _path(claim, CLAIMS), {"spec": {"volumeName": volume["metadata"]["name"]}, "status": status}
            )
        )

    def _release(self, volume: dict[str, Any], claims: dict[tuple[str, str], dict[str, Any]]) -> None:
        ref = volume["spec"].get("claimRef")
        if not ref or not ref.get("uid"):
            return  # free, or reserved for a claim to come
        claim = claims.get((ref["namespace"], ref["name"]))
        if claim is not None and claim["metadata"]["uid"] == ref["uid"]:
            return
        name = volume["metadata"]["name"]
        if volume["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
            _gone(lambda: self.kube.delete(f"{VOLUMES_API}/{name}"))
            shutil.rmtree(self.directory(name), ignore_errors=True)
        elif (volume.get("status") or {}).get("phase") != "Released":
            self.kube.patch(f"{VOLUMES_API}/{name}", {"status": {"phase": "Released"}})


@dataclass
class Kubelet:
    """Runs the pods of ``namespaces`` (all, if empty) on ``node``, each mounted volume a directory of ``volumes``."""

    kube: FakeKube
    volumes: Volumes
    node: str = "node-a"
    namespaces: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)  # what every command's environment starts from
    fail: set[str] = field(default_factory=set)  # claims whose pods fail without running
    # what a pod's containers find in its own filesystem, as variables (a projected token, a private /tmp):
    # (pod, the pod's own directory) → environment
    pod_environment: Callable[[dict[str, Any], Path], dict[str, str]] | None = None
    ran: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # pod name → {"pod", "env", "secrets", "code", "message"}
    _started: set[str] = field(default_factory=set)
    _threads: list[threading.Thread] = field(default_factory=list)

    def reconcile(self) -> None:
        for pod in _objects(self.kube, "api/v1", PODS):
            meta = pod["metadata"]
            if meta["uid"] in self._started or (self.namespaces and meta.get("namespace") not in self.namespaces):
                continue
            if (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed"):
                continue
            claims = self._claims(pod)
            if claims is None:
                if (pod.get("status") or {}).get("phase") != "Pending":
                    self._status(pod, {"phase": "Pending"})
                continue
            self._started.add(meta["uid"])
            container = pod["spec"]["containers"][0]
            if not container.get("command"):
                self._status(pod, {"phase": "Running", "containerStatuses": [_running(container)]})
                continue
            thread = threading.Thread(target=self._run, args=(pod, claims), daemon=True)
            self._threads.append(thread)
            thread.start()

    def join(self, timeout: float = 30.0) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _claims(self, pod: dict[str, Any]) -> dict[str, Path] | None:
        """Pod volume name → directory of its bound volume (an ``emptyDir``: the pod's own); None while a claim
        is not bound."""
        found = {}
        for volume in pod["spec"].get("volumes", []):
            if "emptyDir" in volume:
                found[volume["name"]] = self._pod_directory(pod) / "volumes" / volume["name"]
                continue
            ref = volume.get("persistentVolumeClaim")
            if ref is None:
                continue
            try:
                claim = self.kube.get(f"/api/v1/namespaces/{pod['metadata']['namespace']}/{CLAIMS}/{ref['claimName']}")
            except Exception:
                return None
            if (claim.get("status") or {}).get("phase") != "Bound":
                return None
            found[volume["name"]] = self.volumes.directory(claim["spec"]["volumeName"])
        return found

    def _pod_directory(self, pod: dict[str, Any]) -> Path:
        return self.volumes.root.parent / "pods" / pod["metadata"]["uid"]

    def _run(self, pod: dict[str, Any], claims: dict[str, Path]) -> None:
        name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
        container = pod["spec"]["containers"][0]
        sidecars = [c for c in pod["spec"].get("initContainers", []) if c.get("restartPolicy") == "Always"]
        secrets: dict[str, dict[str, Any]] = {}  # as the pod saw them: a Secret the pod owns goes with the pod
        started: list[subprocess.Popen[bytes]] = []
        statuses = [_running(c) for c in sidecars]
        try:
            self._status(pod, {"phase": "Pending"})  # scheduled on this node; its containers not started yet
            for empty in claims.values():
                if empty.is_relative_to(self._pod_directory(pod)):
                    empty.mkdir(parents=True, exist_ok=True)
            own = self.pod_environment(pod, self._pod_directory(pod)) if self.pod_environment else {}
            for sidecar in sidecars:  # native sidecars: started, and started up, before the main container
                argv, sidecar_env = self._command(sidecar, claims, namespace, secrets, own)
                started.append(subprocess.Popen(argv, env=sidecar_env))
                self._start_up(sidecar, claims, namespace, secrets, own, started[-1])
            self._status(pod, {"phase": "Running", "containerStatuses": [*statuses, _running(container)]})
            argv, env = self._command(container, claims, namespace, secrets, own)
            log = self.volumes.root / f"{name}.termination-log"
            message_path = container.get("terminationMessagePath", "/dev/termination-log")
            argv = [str(log) if arg == message_path else arg for arg in argv]
            mounted = {
                v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v
            }
            if mounted & self.fail:
                code, message = 1, "rok: error: the object store is unreachable"
            else:
                code = subprocess.run(argv, env=env, timeout=60, check=False).returncode
                message = log.read_text() if log.exists() else ""
        except Exception as error:  # a broken pod spec fails the pod, as the kubelet would
            code, message, env = 1, f"kubelet: {error!r}", {}
        self.ran[name] = {"pod": pod, "env": env, "secrets": secrets, "code": code, "message": message}
        terminated = {"exitCode": code, "message": message, "reason": "Completed" if code == 0 else "Error"}
        ended = {**_running(container), "ready": False, "state": {"terminated": terminated}}
        if started:  # the main container has ended; its sidecars are stopped (SIGTERM) and awaited, in turn
            self._status(pod, {"phase": "Running", "containerStatuses": [*statuses, ended]})
            for process in reversed(started):
                process.terminate()
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
        status = {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [ended]}
        self._status(pod, status)

    def _command(
        self,
        container: dict[str, Any],
        claims: dict[str, Path],
        namespace: str,
        secrets: dict[str, dict[str, Any]],
        own: dict[str, str],
    ) -> tuple[list[str], dict[str, str]]:
        """A container's command line and environment, its mount paths replaced by the volumes' directories."""
        env = dict(self.environment)
        for source in container.get("envFrom", []):
            secret = self._secret(namespace, source["secretRef"]["name"])
            secrets[secret["metadata"]["name"]] = secret
            env |= secret.get("stringData", {})
        env |= own
        env |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        mounts = {m["mountPath"]: claims[m["name"]] for m in container.get("volumeMounts", []) if m["name"] in claims}
        return [_mounted(arg, mounts) for arg in container["command"] + container.get("args", [])], env

    def _start_up(
        self,
        sidecar: dict[str, Any],
        claims: dict[str, Path],
        namespace: str,
        secrets: dict[str, dict[str, Any]],
        own: dict[str, str],
        process: subprocess.Popen[bytes],
    ) -> None:
        """Wait until the sidecar's startup probe (``exec``) succeeds, as the kubelet does before the next container."""
        probe = (sidecar.get("startupProbe") or {}).get("exec")
        if probe is None:
            return
        argv, env = self._command({**sidecar, "command": probe["command"], "args": []}, claims, namespace, secrets, own)
        for _ in range(3000):
            if subprocess.run(argv, env=env, timeout=30, check=False).returncode == 0:
                return
            if process.poll() is not None:
                raise RuntimeError(f"sidecar {sidecar['name']} exited ({process.returncode}) before it started up")
            threading.Event().wait(0.02)
        raise RuntimeError(f"the startup probe of sidecar {sidecar['name']} never succeeded")

    def _secret(self, namespace: str, name: str) -> dict[str, Any]:
        for _ in range(500):  # the Secret may be created just after its pod (it is owned by it)
            with contextlib.suppress(Exception):
                return self.kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
            threading.Event().wait(0.01)
        raise RuntimeError(f"the Secret {namespace}/{name} never came")

    def _status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        _gone(lambda: self.kube.patch(_path(pod, PODS), {"spec": {"nodeName": self.node}, "status": status}))


def _mounted(arg: str, mounts: dict[str, Path]) -> str:
    """``arg`` with a mount path (or a path under one) replaced by the volume's directory."""
    for path, directory in mounts.items():
        if arg == path:
            return str(directory)
        if arg.startswith(path.rstrip("/") + "/"):
            return str(directory) + arg[len(path.rstrip("/")) :]
    return arg


def _running(container: dict[str, Any]) -> dict[str, Any]:
    image = container.get("image", "")
    return {
        "name": container["name"],
        "image": image,
        "imageID": f"docker.io/{image}@sha256:{'0' * 64}",
        "ready": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
    }


@dataclass
class Notebooks:
    """The notebook controller: each Notebook gets its pod ``<name>-0``."""

    kube: FakeKube

    def reconcile(self) -> None:
        for notebook in _objects(self.kube, NOTEBOOKS_API, "notebooks"):
            meta = notebook["metadata"]
            pod_name = f"{meta['name']}-0"
            with contextlib.suppress(Exception):
                self.kube.get(f"/api/v1/namespaces/{meta['namespace']}/pods/{pod_name}")
                continue
            template = copy.deepcopy(notebook["spec"]["template"])
            pod = {
                "metadata": {
                    "name": pod_name,
                    "labels": {**template.get("metadata", {}).get("labels", {}), "notebook-name": meta["name"]},
                    "annotations": dict(meta.get("annotations", {})),
                    "ownerReferences": [
                        {"apiVersion": "kubeflow.org/v1", "kind": "Notebook", "name": meta["name"], "uid": meta["uid"]}
                    ],
                },
                "spec": template["spec"],
            }
            with contextlib.suppress(Exception):  # the notebook was deleted meanwhile
                self.kube.create(f"/api/v1/namespaces/{meta['namespace']}/pods", pod)


def mutating_webhook(kube: FakeKube, plural: str, review: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Send every new object of ``plural`` through ``review`` (an ``admission.k8s.io/v1`` AdmissionReview in, its
    answer out) and apply the JSON patch it answers, as the API server does with a mutating webhook."""

    def admit(obj: dict[str, Any]) -> None:
        request = {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": obj.get("kind") or "Pod"},
            "operation": "CREATE",
            "namespace": obj["metadata"].get("namespace"),
            "object": copy.deepcopy(obj),
        }
        answer = review({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
        response = answer["response"]
        if not response.get("allowed"):
            raise RuntimeError(f"the webhook refused {obj['metadata'].get('name')}: {response.get('status')}")
        if response.get("patch"):
            patched = _json_patch(obj, json.loads(base64.b64decode(response["patch"])))
            obj.clear()
            obj.update(patched)

    kube.react(plural, admit)


@dataclass
class Cluster:
    """:class:`Volumes`, a :class:`Kubelet` and :class:`Notebooks` reconciling ``kube`` while the ``with`` lasts."""

    kube: FakeKube
    root: Path
    node: str = "node-a"
    environment: dict[str, str] = field(default_factory=dict)
    namespaces: tuple[str, ...] = ()  # whose pods the kubelet runs (all, if empty)
    fail: set[str] = field(default_factory=set)  # claims whose pods fail, as if the object store were unreachable
    pod_environment: Callable[[dict[str, Any], Path], dict[str, str]] | None = None  # see Kubelet

    def __post_init__(self) -> None:
        self.volumes = Volumes(self.kube, self.root / "volumes")
        self.kubelet = Kubelet(
            self.kube,
            self.volumes,
            self.node,
            self.namespaces,
            environment=self.environment,
            fail=self.fail,
            pod_environment=self.pod_environment,
        )
        self.notebooks = Notebooks(self.kube)
        self.workflows = Workflows(self.kube)
        self._stop = threading.Event()
        self.errors: list[BaseException] = []

    @contextlib.contextmanager
    def running(self) -> Iterator[Cluster]:
        thread = threading.Thread(target=self._loop, name="fake-cluster", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(5)
            self.kubelet.join()
        if self.errors:
            raise self.errors[0]

    def _loop(self) -> None:
        while not self._stop.wait(0.01):
            try:
                self.volumes.reconcile()
                self.workflows.reconcile()
                self.notebooks.reconcile()
                self.kubelet.reconcile()
            except BaseException as error:  # reported when the cluster stops
                self.errors.append(error)
                return

    def claim_directory(self, namespace: str, claim: str) -> Path:
        found = self.kube.get(f"/api/v1/namespaces/{namespace}/{CLAIMS}/{claim}")
        return self.volumes.directory(found["spec"]["volumeName"])


# --- the API's schema, from the official client's models ---------------------------------------------------

_SCALARS: dict[str, Any] = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str}


def schema_errors(obj: Any, model: str, where: str = "") -> list[str]:
    """Every field of ``obj`` (JSON) that the API's schema of ``model`` (``V1Pod``, …) does not have, or has
    with another type; empty when it conforms."""
    from kubernetes import client

    kind = model.strip()
    if kind.startswith("List[") and kind.endswith("]"):
        if not isinstance(obj, list):
            return [f"{where or '.'}: a list expected, got {type(obj).__name__}"]
        return [e for i, item in enumerate(obj) for e in schema_errors(item, kind[5:-1], f"{where}[{i}]")]
    if kind.startswith("Dict[str, ") and kind.endswith("]"):
        if not isinstance(obj, dict):
            return [f"{where or '.'}: a map expected, got {type(obj).__name__}"]
        return [e for k, v in obj.items() for e in schema_errors(v, kind[10:-1], f"{where}.{k}")]
    if kind == "object":
        return []
    if kind in _SCALARS:
        if not isinstance(obj, _SCALARS[kind]) or (kind == "int" and isinstance(obj, bool)):
            return [f"{where or '.'}: {kind} expected, got {obj!r}"]
        return []
    cls = getattr(client, kind)
    if not isinstance(obj, dict):
        return [f"{where or '.'}: a {kind} object expected, got {obj!r}"]
    fields = {cls.attribute_map[name]: cls.openapi_types[name] for name in cls.openapi_types}
    errors = []
    for key, value in obj.items():
        if key not in fields:
            errors.append(f"{where}.{key}: {kind} has no such field")
        elif value is not None:
            errors.extend(schema_errors(value, fields[key], f"{where}.{key}"))
    return errors
