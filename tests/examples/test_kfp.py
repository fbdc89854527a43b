"""examples/kfp: the KFP SDK pipeline, compiled by the SDK and run by ``rok run`` against the real services
(``rok up`` in a temporary state directory), its tasks reading and writing their PVC at its mount path, their
parameters and artifacts passed as KFP passes them, and a middle task's after-state restored."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from rokcommon.credentials import web_token
from roktesting.ports import free_port

ROK = str(Path(sys.executable).parent / "rok")
EXAMPLE = Path(__file__).parents[2] / "examples" / "kfp"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    state = tmp_path_factory.mktemp("rok-state")
    env = {
        **os.environ,
        "ROK_STATE_DIR": str(state),
        "ROK_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "ROK_REGISTRY_PORT": str(free_port()),
        "ROK_VOLUME_ROOTS": str(tmp_path_factory.getbasetemp()),
        "ROK_RESTORE_ROOTS": str(tmp_path_factory.getbasetemp()),
        "OTEL_SDK_DISABLED": "true",
    }
    up = subprocess.run([ROK, "up"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        yield env
    finally:
        subprocess.run([ROK, "down"], env=env, capture_output=True, timeout=60)


def mounts_at(path):
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if line.split()[4] == path]


def rok(env, *args):
    return subprocess.run([ROK, *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_kfp_example_runs_task_by_task_and_a_middle_tasks_after_state_restores(system, tmp_path):
    example = tmp_path / "kfp"
    shutil.copytree(EXAMPLE, example)
    compiled = subprocess.run(
        [sys.executable, str(example / "pipeline.py"), str(tmp_path / "pipeline.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert compiled.returncode == 0, compiled.stderr
    data = example / "data"
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    mount_path_existed, mounted_there = Path("/data").exists(), mounts_at("/data")

    result = rok(system, "run", str(tmp_path / "pipeline.yaml"), "--volume", f"churn-data={data}", "-p", "max_tenure=5")

    assert result.returncode == 0, result.stderr
    # each task read and wrote /data, its mount path, in a mount namespace of its own: nothing of it stays here
    assert Path("/data").exists() == mount_path_existed
    assert mounts_at("/data") == mounted_there
    urls = dict(line.split() for line in result.stdout.splitlines() if line.startswith("  "))
    assert list(urls) == [
        "initial",
        *(f"{task}/{when}" for task in ("prepare", "train", "evaluate") for when in ("before", "after")),
    ]
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before  # the run worked on its clone

    restored = tmp_path / "train-after"
    restore = rok(system, "restore", urls["train/after"], "--to", str(restored))
    assert restore.returncode == 0, restore.stderr
    kept = restored / ".kfp" / "churn-kfp"
    # train read prepare's artifact and parameter, and the pipeline input max_tenure=5 given with -p
    model = json.loads((restored / "model.json").read_text())
    assert model["tenure_below"] <= 4
    assert (kept / "train" / "model").read_text() == (restored / "model.json").read_text()
    outputs = json.loads((kept / "train" / "outputs.json").read_text())
    assert outputs["Output"] == {"value": model["tenure_below"]}
    assert outputs["model"]["metadata"] == {"tenure_below": model["tenure_below"]}
    clean = (kept / "prepare" / "clean").read_text().splitlines()
    assert json.loads((kept / "prepare" / "outputs.json").read_text())["Output"] == {"value": len(clean) - 1}
    # and nothing of the task after it
    assert not (restored / "metrics.json").exists()
    assert not (kept / "evaluate").exists()

    # the web UI's step page (where a compiled notebook's step links point) leads to the step's version
    run_id = next(line.split()[1].rstrip(",") for line in result.stdout.splitlines() if line.startswith("run "))
    query = urllib.parse.urlencode({"ns": "local", "run": run_id, "step": "train", "phase": "after"})
    page = f"http://127.0.0.1:{system['ROK_REGISTRY_PORT']}/steps?{query}"
    token = web_token(Path(system["ROK_STATE_DIR"]))
    request = urllib.request.Request(page, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        landed = urllib.parse.urlsplit(response.url)
    version = urllib.parse.parse_qs(urllib.parse.urlsplit(urls["train/after"]).query)["version"][0]
    assert urllib.parse.parse_qs(landed.query)["version"] == [version]
    missing = urllib.parse.urlencode({"ns": "local", "run": run_id, "step": "deploy", "phase": "after"})
    request = urllib.request.Request(page.split("?")[0] + "?" + missing, headers=request.headers)
    with pytest.raises(urllib.error.HTTPError) as not_yet:
        urllib.request.urlopen(request, timeout=10)
    assert not_yet.value.code == 404
