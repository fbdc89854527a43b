"""A notebook's steps, each in a Python process of its own: variables marshaled through the workspace's hidden
folder (classes, lambdas and closures included), the executed cells saved as a notebook, failures named."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from notebook_files import cell, write_notebook
from rok_pipeline_watcher.notebook import parse_notebook
from rok_pipeline_watcher.notebook.local import NotebookSteps, marshal_dir

RUN = "run-1234"


async def run_steps(notebook: Path, *steps: str, **parameters: object) -> tuple[dict[str, int], NotebookSteps]:
    """Run the notebook's steps one after the other in its own directory, as the runner would in a clone."""
    pipeline = parse_notebook(notebook)
    values = {**pipeline.parameter_values(), **parameters}
    launcher = NotebookSteps(pipeline, workspace=notebook.parent, parameters=values)
    codes = {}
    for step in steps or [s.task_name for s in pipeline.order()]:
        codes[step] = await launcher.launch(step, notebook.parent, {"ROK_RUN_ID": RUN, "PATH": "/usr/bin:/bin"})
    return codes, launcher


def executed(notebook: Path, step: str) -> nbformat.NotebookNode:
    saved = nbformat.read(marshal_dir(notebook.parent, RUN) / f"{step}.ipynb", as_version=4)
    nbformat.validate(saved)
    return saved


async def test_objects_of_notebook_classes_lambdas_and_closures_reach_a_later_step(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            cell("import math", "imports"),
            cell(
                "class Scaler:\n    def __init__(self, k):\n        self.k = k\n    def __call__(self, v):\n"
                "        return self.k * v\n\ndef adder(n):\n    return lambda v: v + n",
                "functions",
            ),
            cell("factor = 3", "pipeline-parameters"),
            cell("scale = Scaler(factor)\nshift = adder(10)\nsquare = lambda v: v * v\nsecret = math.pi", "step:make"),
            cell(
                "result = [shift(scale(square(v))) for v in (1, 2)]\nwith open('result.json', 'w') as f:\n"
                "    f.write(str(result))\nprint(type(scale).__name__, round(secret, 2))",
                "step:use",
                "prev:make",
            ),
        ],
    )
    codes, _ = await run_steps(notebook, factor=2)

    assert codes == {"make": 0, "use": 0}
    assert (tmp_path / "result.json").read_text() == "[12, 18]"  # the parameter's override, 2, not 3
    saved = sorted(p.name for p in (marshal_dir(tmp_path, RUN) / "make").glob("*.pkl"))
    assert saved == ["scale.pkl", "secret.pkl", "shift.pkl", "square.pkl"]
    use = executed(notebook, "use")
    assert use.cells[-1].outputs == [{"output_type": "stream", "name": "stdout", "text": "Scaler 3.14\n"}]


async def test_the_executed_notebook_holds_every_cell_that_ran_with_its_outputs(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            cell("import sys", "imports"),
            cell("rate = 0.5", "pipeline-parameters"),
            cell("print('hello')\nprint('oops', file=sys.stderr)\nrate * 4", "step:only"),
            cell("x = 1;"),  # a trailing `;` hides the value, as in Jupyter
        ],
    )
    codes, _ = await run_steps(notebook)

    assert codes == {"only": 0}
    saved = executed(notebook, "only")
    assert [c.metadata.rok.role for c in saved.cells] == ["parameters", "imports", "step", "step"]
    assert [c.metadata.rok.cell for c in saved.cells] == [1, 0, 2, 3]
    assert saved.cells[0].source == "rate = 0.5" and saved.cells[0].metadata.tags == ["pipeline-parameters"]
    assert saved.cells[2].metadata.tags == ["step:only"]
    outputs = saved.cells[2].outputs
    assert [o.output_type for o in outputs] == ["stream", "stream", "execute_result"]
    assert (outputs[0].text, outputs[1].name, outputs[2].data["text/plain"]) == ("hello\n", "stderr", "2.0")
    assert saved.cells[3].outputs == []
    assert [c.execution_count for c in saved.cells] == [1, 2, 3, 4]
    assert saved.metadata.kernelspec.name == "python3"


async def test_a_value_that_cannot_be_saved_fails_its_step_naming_the_variable_and_its_type(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            cell("import threading\nlock = threading.Lock()\nn = 1", "step:make"),
            cell("with lock:\n    print(n)", "step:use", "prev:make"),
        ],
    )
    codes, launcher = await run_steps(notebook, "make")

    assert codes == {"make": 3}
    reason = launcher.failure("make")
    assert reason is not None
    assert reason.startswith("cannot save variable lock (a _thread.lock) for the steps after it: TypeError")
    assert not (marshal_dir(tmp_path, RUN) / "make" / "lock.pkl").exists()
    assert not list((marshal_dir(tmp_path, RUN) / "make").glob("*.partial"))
    executed(notebook, "make")  # written all the same


async def test_a_cell_that_raises_ends_its_step_and_its_notebook_shows_the_error(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            cell("print('first')", "step:only"),
            cell("{}['missing']"),
            cell("print('never')"),
        ],
    )
    codes, launcher = await run_steps(notebook)

    assert codes == {"only": 1}
    assert launcher.failure("only") == "cell 2 raised KeyError: 'missing'"
    saved = executed(notebook, "only")
    assert len(saved.cells) == 2  # the third never ran
    error = saved.cells[1].outputs[0]
    assert (error.output_type, error.ename) == ("error", "KeyError")
    assert any("<cell 2>" in line for line in error.traceback)
    assert not any("executor.py" in line for line in error.traceback)


async def test_metrics_are_numbers_the_step_that_assigns_them_reports(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            cell("acc_score = 0.75\nlabel = 'good'", "step:score"),
            cell("print(acc_score)", "pipeline-metrics"),
        ],
    )
    codes, launcher = await run_steps(notebook)
    assert codes == {"score": 0}
    assert launcher.metrics() == {"acc-score": 0.75}
    assert json.loads((marshal_dir(tmp_path, RUN) / "score" / "metrics.json").read_text()) == {"acc-score": 0.75}

    words = write_notebook(
        tmp_path / "words.ipynb",
        [cell("label = 'good'", "step:score"), cell("print(label)", "pipeline-metrics")],
    )
    codes, launcher = await run_steps(words)
    assert codes == {"score": 3}
    assert launcher.failure("score") == "metric label: label is a str, not a number"


@pytest.mark.parametrize("source", ["!echo hi", "%time x = 1"])
async def test_ipython_syntax_without_ipython_is_refused_naming_the_cell(tmp_path: Path, source: str) -> None:
    notebook = write_notebook(tmp_path / "nb.ipynb", [cell("x = 0", "step:only"), cell(source)])
    codes, launcher = await run_steps(notebook)
    assert codes == {"only": 3}
    assert launcher.failure("only") == (
        "cell 2 uses IPython syntax (% or !), which needs IPython in the step's Python: install ipython there, "
        "or write the cell in plain Python"
    )
