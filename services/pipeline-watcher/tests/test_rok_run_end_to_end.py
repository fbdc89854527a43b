"""``rok run`` against the real services (``rok up`` in a temporary state directory): versions recorded,
the notebook untouched, a failing step named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from rokcommon.credentials import web_token
from roktesting.ports import free_port

ROK = str(Path(sys.executable).parent / "rok")
EXAMPLE = Path(__file__).parents[3] / "examples" / "churn"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """nats-server and the four services, started by ``rok up`` on free ports, stopped by ``rok down``."""
    state = tmp_path_factory.mktemp("rok-state")
    env = {
        **os.environ,
        "ROK_STATE_DIR": str(state),
        "ROK_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "ROK_REGISTRY_PORT": str(free_port()),
    }
    up = subprocess.run([ROK, "up"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        yield env
    finally:
        subprocess.run([ROK, "down"], env=env, capture_output=True, timeout=60)


def rok(env, *args):
    return subprocess.run([ROK, *args], env=env, capture_output=True, text=True, timeout=120)


def tags(env, url):
    """A version's tags, as the registry's HTTP API answers."""
    query = urllib.parse.urlencode({"url": url})
    address = f"http://127.0.0.1:{env['ROK_REGISTRY_PORT']}/api/v1/namespaces/local/version?{query}"
    token = web_token(Path(env["ROK_STATE_DIR"]))  # the local user's, as rok up wrote it
    request = urllib.request.Request(address, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["tags"]


def test_the_example_pipeline_runs_every_step_between_committed_snapshots_in_a_clone(system, tmp_path):
    example = tmp_path / "churn"
    shutil.copytree(EXAMPLE, example)
    before = {p.relative_to(example): p.read_bytes() for p in (example / "notebook").rglob("*") if p.is_file()}

    result = rok(system, "run", str(example / "pipeline.yaml"))

    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
    urls = dict(line.split() for line in result.stdout.splitlines() if line.startswith("  "))
    assert list(urls) == [
        "initial",
        "prepare/before",
        "prepare/after",
        "train/before",
        "train/after",
        "evaluate/before",
        "evaluate/after",
    ]
    assert all(url.startswith("rok://local/") for url in urls.values())
    assert "final" in tags(system, urls["evaluate/after"])
    after = {p.relative_to(example): p.read_bytes() for p in (example / "notebook").rglob("*") if p.is_file()}
    assert after == before  # the steps ran in the clone; the notebook's own directories are untouched


def test_a_failing_step_exits_non_zero_naming_it_and_its_after_snapshot_is_tagged_failed(system, tmp_path):
    (tmp_path / "home").mkdir()
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        "pipeline: broken\nexperiment: trials\nvolumes:\n  - name: workspace\n    path: ./home\n"
        "steps:\n  - name: crash\n    run: echo partial > out.txt; exit 4\n"
        "  - name: never\n    run: touch never.txt\n    after: [crash]\n"
    )

    result = rok(system, "run", str(pipeline))

    assert result.returncode != 0
    assert "step 'crash' failed with exit code 4; not run: never" in result.stderr
    urls = dict(line.split() for line in result.stdout.splitlines() if line.startswith("  "))
    assert "never/before" not in urls
    assert "failed" in tags(system, urls["crash/after"])
