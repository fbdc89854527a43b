"""``rok run NOTEBOOK.ipynb``'s options are checked before anything connects or runs (exit code 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from notebook_files import cell, write_notebook
from rok_pipeline_watcher.notebook import NotebookError
from rok_pipeline_watcher.runner.cli import run
from rok_pipeline_watcher.runner.pipeline import PipelineError


@pytest.fixture
def notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ROK_VOLUME_ROOTS", str(tmp_path))
    monkeypatch.setenv("ROK_NATS_URL", "nats://127.0.0.1:1")  # nothing answers: nothing may get that far
    return write_notebook(
        tmp_path / "nb.ipynb",
        [cell("epochs = 3", "pipeline-parameters"), cell("x = epochs", "step:only")],
        volumes=[{"name": "home", "mount_point": "/home/jovyan"}, {"name": "data", "mount_point": "/data"}],
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "epochs=many", "--volume", "data=."], "parameter epochs is an int: 'many' is not one"),
        (["-p", "epoch=1", "--volume", "data=."], "no pipeline parameter is called 'epoch' (the parameters: epochs)"),
        (["-p", "epochs"], "-p 'epochs': write NAME=VALUE"),
        (
            [],
            "volume data (mounted at /data in the notebook server) has no directory on this machine: "
            "give one with --volume data=DIR",
        ),
        (
            ["--volume", "scratch=."],
            "--volume scratch: the notebook has no volume of that name (its volumes: home, data)",
        ),
    ],
)
def test_a_wrong_option_is_refused_naming_it(notebook: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(run, [str(notebook), *args])
    # the rok CLI prints a NotebookError as one line and exits with its exit code
    assert isinstance(result.exception, NotebookError) and result.exception.exit_code == 2
    assert message in str(result.exception)


def test_notebook_options_are_refused_for_a_pipeline_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(run, [str(tmp_path / "pipeline.yaml"), "-p", "a=1"])
    # the rok CLI prints a PipelineError as one line and exits with its exit code
    assert isinstance(result.exception, PipelineError) and result.exception.exit_code == 2
    assert "-p and --volume are for notebooks and pipelines compiled by the KFP SDK" in str(result.exception)
