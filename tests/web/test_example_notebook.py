"""examples/notebook/churn.ipynb end to end: ``rok run`` of the Kale-tagged notebook against the real services
(``rok up`` in a temporary state directory), a restore of a middle step's after-state holding its marshaled
variables and its executed notebook, the run's metrics in ``rok show`` and on its page."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import pytest
from cli.stack import Result, Stack, local_stack
from playwright.sync_api import Page, expect

EXAMPLE = Path(__file__).parents[2] / "examples" / "notebook"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of this module's own: the shared one's tests count its buckets and runs."""
    with local_stack(tmp_path_factory.mktemp("rok-notebook")) as running:
        yield running


@dataclass
class NotebookRun:
    notebook: Path
    result: Result
    urls: dict[str, str]  # "initial", "<step>/before", ... → URL
    metrics: dict[str, float]


def _run(stack: Stack, notebook: Path, *args: str) -> NotebookRun:
    result = stack.rok("run", str(notebook), *args)
    urls: dict[str, str] = {}
    metrics: dict[str, float] = {}
    section = None
    for line in result.out.splitlines():
        if not line.startswith("  "):
            section = "metrics" if line == "its metrics:" else "versions"
            continue
        name, value = line.split()
        if section == "metrics":
            metrics[name] = float(value)
        else:
            urls[name] = value
    return NotebookRun(notebook, result, urls, metrics)


@pytest.fixture(scope="module")
def churn(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> NotebookRun:
    workspace = tmp_path_factory.mktemp("churn") / "notebook"
    shutil.copytree(EXAMPLE, workspace)
    return _run(stack, workspace / "churn.ipynb", "-p", "epochs=120", "--parallelism", "2")


def test_each_step_of_the_notebook_runs_between_committed_snapshots_in_a_clone(churn: NotebookRun) -> None:
    assert churn.result.code == 0, churn.result.err
    assert set(churn.urls) == {
        "initial",
        *(
            f"{step}/{phase}"
            for step in ("load", "features", "baseline", "train", "evaluate")
            for phase in ("before", "after")
        ),
    }
    order = list(churn.urls)
    assert order.index("load/after") < order.index("features/before") < order.index("train/before")
    assert order.index("train/after") < order.index("evaluate/before")
    assert order.index("baseline/after") < order.index("evaluate/before")
    # the steps ran in the clone: the notebook's own directory is as it was
    assert sorted(p.name for p in churn.notebook.parent.iterdir()) == ["churn.ipynb", "customers.csv"]


def test_the_notebooks_metrics_are_recorded_with_the_run(churn: NotebookRun, stack: Stack) -> None:
    assert set(churn.metrics) == {"accuracy", "baseline-accuracy"}
    assert 0.5 < churn.metrics["accuracy"] <= 1.0
    shown = stack.rok("show", churn.urls["load/after"])
    assert shown.code == 0, shown.err
    line = next(line for line in shown.out.splitlines() if line.startswith("run metrics"))
    assert f"accuracy {churn.metrics['accuracy']:g}" in line
    assert f"baseline-accuracy {churn.metrics['baseline-accuracy']:g}" in line


def test_a_middle_steps_after_state_holds_its_variables_and_its_executed_notebook(
    churn: NotebookRun, stack: Stack, tmp_path: Path
) -> None:
    target = tmp_path / "train-after"
    restored = stack.rok("restore", churn.urls["train/after"], "--to", str(target))
    assert restored.code == 0, restored.err

    (run,) = (target / ".rok" / "marshal").iterdir()
    saved = {p.relative_to(run).as_posix() for p in run.rglob("*.pkl")}
    assert {"load/train_rows.pkl", "load/test_rows.pkl", "features/to_features.pkl", "train/model.pkl"} <= saved
    assert not (run / "evaluate").exists() and not (target / "report.txt").exists()  # evaluate came after

    with (run / "train" / "model.pkl").open("rb") as file:
        model = cloudpickle.load(file)  # a Model of the notebook's functions cell, as the step left it
    assert len(model.weights) == 2 and 0.0 <= model.probability([0.0, 0.0]) <= 1.0

    notebook = json.loads((run / "train.ipynb").read_text())
    parameters, *_, last = notebook["cells"]
    assert "epochs = 120" in parameters["source"]  # the run's value, not the notebook's 300
    assert last["outputs"][0]["data"]["text/plain"] == repr((model.weights, model.bias))
    assert json.loads((run / "train" / "spec.json").read_text())["parameters"]["epochs"] == 120


def test_the_runs_page_shows_its_metrics(churn: NotebookRun, stack: Stack, page: Page) -> None:
    bucket, file = churn.urls["initial"].split("?")[0].split("/")[3:5]
    page.goto(f"/buckets/{bucket}/{file}")
    rows = page.locator("#metrics tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("accuracy")
    expect(rows.nth(0)).to_contain_text(f"{churn.metrics['accuracy']:g}")
    expect(rows.nth(1)).to_contain_text("baseline-accuracy")
