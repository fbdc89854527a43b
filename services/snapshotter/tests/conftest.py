"""Fixtures of the snapshotter's tests: settings pointing at the test's nats-server, store and volumes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rok_snapshotter.settings import SnapshotterSettings
from rokcommon.events import VolumeRef
from roktesting.nats import NatsServer

# The tests import their helpers by name (pytest's importlib mode puts no test directory on sys.path).
sys.path.insert(0, str(Path(__file__).parent))

from snapshotter_helpers import NODE


@pytest.fixture
def settings_for(nats_server: NatsServer, tmp_path: Path) -> Callable[..., SnapshotterSettings]:
    def make(**overrides: object) -> SnapshotterSettings:
        values: dict[str, object] = {
            "nats_url": nats_server.url,
            "node_name": NODE,
            "state_dir": tmp_path / "state",
            "repository": (tmp_path / "repo").as_uri(),
            "kubelet_pods_dir": tmp_path / "pods",
            "volume_roots": str(tmp_path),
            "log_format": "text",
            "ack_wait": 10.0,
            "retry_delay": 0.1,
            "max_deliver": 3,
            "graceful_timeout": 10.0,
        }
        return SnapshotterSettings(**(values | overrides))

    return make


@pytest.fixture
def volumes(tmp_path: Path) -> tuple[VolumeRef, ...]:
    """A workspace and a data volume with a few files, as local directories."""
    ws, data = tmp_path / "vols" / "workspace", tmp_path / "vols" / "data"
    (ws / "src").mkdir(parents=True)
    data.mkdir(parents=True)
    (ws / "src" / "train.py").write_text("print('train')\n")
    (ws / "notes.md").write_text("# notes\n")
    (data / "table.bin").write_bytes(os.urandom(300_000))
    return (
        VolumeRef(name="workspace", role="workspace", path=str(ws)),
        VolumeRef(name="data", path=str(data)),
    )
