"""The notebook server a run came from, as recorded when the run starts, so that a restore can give it back.

A Kubeflow notebook server is a ``Notebook`` whose pod runs one container: its image, resources and environment,
and the PVCs it mounts (the workspace at ``/home/jovyan`` as the notebook form makes it, data volumes wherever
the user put them). :func:`notebook_server` reads that from the notebook's pod (and the PVCs it mounts), the way
the pipeline watcher sees them when a run starts; a version's :class:`NotebookServer` (``Version.notebook``) is
what the restorer rebuilds a new notebook server from: the same image, resources, environment and mount paths,
one new PVC per volume, the workspace first, each sized at least as the original.

Only plain values are kept: an environment variable taken from a Secret or a ConfigMap (``valueFrom``) keeps its
reference, never the value, and nothing here is a credential.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from rokcommon.frozen import Model

WORKSPACE_MOUNT = "/home/jovyan"
GIB = 1024**3
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_UNITS |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
NOTEBOOK_NAME_LABEL = "notebook-name"  # the label the notebook controller puts on a notebook server's pod


class NotebookVolume(Model):
    """One PVC of the notebook server: the rok volume it is, where it was mounted, and what the claim asked."""

    volume: str  # the rok volume name (the claim's name, as the watcher names volumes)
    claim: str
    mount_path: str
    size: str | None = None  # the claim's requested storage, a Kubernetes quantity
    access_modes: tuple[str, ...] = ()
    storage_class: str | None = None


class NotebookServer(Model):
    """What a new notebook server needs to be the one a run came from (see the module's docstring)."""

    name: str
    namespace: str
    image: str
    resources: dict[str, dict[str, str]] = Field(default_factory=dict)  # requests / limits
    env: tuple[dict[str, Any], ...] = ()  # Kubernetes EnvVar objects
    volumes: tuple[NotebookVolume, ...] = ()  # the workspace first
    service_account: str | None = None
    server_type: str | None = None  # the notebooks.kubeflow.org/server-type annotation (jupyter, …)

    def volume(self, name: str) -> NotebookVolume | None:
        return next((v for v in self.volumes if v.volume == name), None)


def notebook_server(
    pod: Mapping[str, Any], claims: Mapping[str, Mapping[str, Any]] | None = None, *, workspace: str | None = None
) -> NotebookServer:
    """The :class:`NotebookServer` of a notebook's ``pod`` (a Kubernetes Pod as JSON), with what each mounted
    PVC in ``claims`` (claim name → PersistentVolumeClaim as JSON) asked for; ``workspace`` names the workspace
    volume, else the claim mounted at ``/home/jovyan`` (else the first) is."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    name = (metadata.get("labels") or {}).get(NOTEBOOK_NAME_LABEL) or metadata.get("name") or ""
    containers = list(spec.get("containers") or ())
    if not containers:
        raise ValueError(f"pod {metadata.get('name')!r} has no container: it is no notebook server")
    main = next((c for c in containers if c.get("name") == name), containers[0])
    claim_of = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes") or ()
        if "persistentVolumeClaim" in v and v.get("name")
    }
    volumes = []
    for mount in main.get("volumeMounts") or ():
        claim = claim_of.get(mount.get("name", ""))
        if claim is None:
            continue
        claim_spec = ((claims or {}).get(claim) or {}).get("spec") or {}
        volumes.append(
            NotebookVolume(
                volume=claim,
                claim=claim,
                mount_path=mount["mountPath"],
                size=((claim_spec.get("resources") or {}).get("requests") or {}).get("storage"),
                access_modes=tuple(claim_spec.get("accessModes") or ()),
                storage_class=claim_spec.get("storageClassName"),
            )
        )
    first = workspace or next((v.volume for v in volumes if v.mount_path == WORKSPACE_MOUNT), None)
    volumes.sort(key=lambda v: v.volume != first)  # stable: the workspace first, the others in mount order
    resources = main.get("resources") or {}
    return NotebookServer(
        name=name,
        namespace=metadata.get("namespace") or "",
        image=main.get("image") or "",
        resources={k: {r: str(q) for r, q in (resources.get(k) or {}).items()} for k in ("requests", "limits")},
        env=tuple(dict(e) for e in main.get("env") or ()),
        volumes=tuple(volumes),
        service_account=spec.get("serviceAccountName"),
        server_type=(metadata.get("annotations") or {}).get("notebooks.kubeflow.org/server-type"),
    )


class NotAQuantity(ValueError):
    """A size that is not a Kubernetes quantity."""


def quantity_bytes(quantity: str) -> int:
    """The bytes a Kubernetes storage quantity stands for (``10Gi`` → 10737418240)."""
    found = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", quantity.strip())
    if found is None or found.group(2) not in _UNITS:
        raise NotAQuantity(f"size {quantity!r} is not a Kubernetes quantity (such as 10Gi, 500Mi or 2G)")
    return math.ceil(float(found.group(1)) * _UNITS[found.group(2)])


def with_headroom(data_bytes: int) -> str:
    """The data's size with a quarter of headroom, in whole GiB (at least 1Gi)."""
    return f"{max(1, math.ceil(data_bytes * 1.25 / GIB))}Gi"


def suggested_size(data_bytes: int, original: NotebookVolume | None, default: str = "10Gi") -> str:
    """A new PVC's size when nobody names one: the original claim's if the data fits in it, else the data's with
    headroom; ``default`` when nothing is known of either."""
    if original is not None and original.size:
        try:
            if quantity_bytes(original.size) >= data_bytes:
                return original.size
        except NotAQuantity:
            pass
    return with_headroom(data_bytes) if data_bytes > 0 else default
