from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
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


@pytest.fixture(autouse=True)
def no_watch_outlives_its_test() -> Iterator[None]:
    """A watch thread left running goes on retrying a server that is gone, logging into later tests."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while left := [t.name for t in set(threading.enumerate()) - before if t.name.startswith("watch-")]:
        assert time.monotonic() < deadline, f"watch threads still running after the test: {left}"
        time.sleep(0.05)
