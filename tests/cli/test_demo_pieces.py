"""The demo's own parts: its wheel installs offline and is the same bytes every time, its pipeline file is valid."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


def _build(out: Path) -> Path:
    spec = importlib.util.spec_from_file_location("build_wheel", DEMO / "build_wheel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(out)


def test_the_wheel_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    assert _build(tmp_path / "a").read_bytes() == _build(tmp_path / "b").read_bytes()


def test_the_wheel_installs_offline_into_a_directory_and_fits_a_line(tmp_path: Path) -> None:
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path.home() / ".local" / "bin"))
    if uv is None:
        pytest.fail("uv is not installed: run `make setup`", pytrace=False)
    wheel = _build(tmp_path / "wheels")
    target = tmp_path / "lib"
    offline = ["--quiet", "--offline", "--no-index", "--python", sys.executable]
    subprocess.run([uv, "pip", "install", *offline, "--target", str(target), str(wheel)], check=True)
    fitted = subprocess.run(
        [sys.executable, "-c", "import tinyfit; print(tinyfit.fit_line([0, 1, 2, 3], [2, 5, 8, 11]))"],
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert fitted.stdout.strip() == "(3.0, 2.0)"


def test_the_pipeline_file_names_three_steps_in_order_over_two_volumes(tmp_path: Path) -> None:
    from rok_pipeline_watcher.runner.pipeline import load

    copy = tmp_path / "pipeline.yaml"
    shutil.copy(DEMO / "pipeline.yaml", copy)
    for volume in ("workspace", "data"):
        (tmp_path / "notebook" / volume).mkdir(parents=True)
    pipeline = load(copy)
    assert [v.name for v in pipeline.volumes] == ["workspace", "data"]
    assert [s.name for s in pipeline.order()] == ["install", "prepare", "train"]
