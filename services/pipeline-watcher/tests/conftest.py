from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# The tests import their helpers by name (pytest's importlib mode puts no test directory on sys.path).
sys.path.insert(0, str(Path(__file__).parent))
from watcher_testkit import Run, load


@pytest.fixture
def v1_run() -> Run:
    return Run("kfp_v1_retry_workflow.json", "kfp_v1_retry_pods.json")


@pytest.fixture
def v2_run() -> Run:
    return Run("kfp_v2_workflow.json", "kfp_v2_pods.json")


@pytest.fixture
def notebook_pod() -> dict[str, Any]:
    return load("notebook_pod.json")["items"][0]
