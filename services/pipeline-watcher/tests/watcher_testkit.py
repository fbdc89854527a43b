"""Helpers of the pipeline-watcher tests: fixture files and runs a test may change."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> Any:
    """A fixture file, without its ``_source`` note."""
    data = json.loads((FIXTURES / name).read_text())
    data.pop("_source", None)
    return data


class Run:
    """A workflow with its pods (by node id), as a test is free to change them."""

    def __init__(self, workflow: str, pods: str) -> None:
        from rok_pipeline_watcher import argo

        self.workflow: dict[str, Any] = load(workflow)
        self.pod_list: list[dict[str, Any]] = load(pods)["items"]
        self.pods = {argo.pod_node_id(p): p for p in self.pod_list}

    def node(self, display_name: str) -> dict[str, Any]:
        (found,) = [n for n in self.workflow["status"]["nodes"].values() if n["name"].endswith(display_name)]
        return found

    def pod(self, display_name: str) -> dict[str, Any]:
        return self.pods[self.node(display_name)["id"]]

    def copy(self) -> Run:
        return copy.deepcopy(self)
