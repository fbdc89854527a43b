"""Reading Kale-tagged notebooks: the tags, the metadata, the variables that flow, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_files import cell, markdown, write_notebook
from rok_pipeline_watcher.notebook import Marshaled, NotebookError, parse_notebook


def test_steps_are_the_tagged_cells_with_the_untagged_cells_after_them(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            cell("scratch = 1"),  # before any tag: not part of the pipeline
            cell("import math", "imports"),
            cell("import json"),  # untagged: still imports
            markdown("# Loading"),
            cell("x = 1", "step:load"),
            cell("y = 2"),
            cell("z = x + y", "step:train", "prev:load"),
            cell("print('not run')", "skip"),
            cell("w = z * 2"),
        ],
    )
    pipeline = parse_notebook(notebook)
    assert [s.name for s in pipeline.steps] == ["load", "train"]
    load, train = pipeline.steps
    assert load.cells == (4, 5) and load.source == "x = 1\ny = 2"
    assert train.cells == (6, 8) and train.prev == ("load",)
    assert pipeline.imports == "import math\nimport json"
    assert pipeline.prelude_cells == (1, 2)
    assert "scratch" not in pipeline.imports + load.source + train.source


def test_the_older_block_tag_is_a_step_and_a_name_seen_again_goes_on_with_that_step(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            cell("a = 1", "block:first"),
            cell("b = a", "step:second", "prev:first"),
            cell("a2 = a + 1", "block:first"),
        ],
    )
    pipeline = parse_notebook(notebook)
    assert pipeline.step("first").cells == (0, 2)
    assert pipeline.step("first").source == "a = 1\na2 = a + 1"


def test_variables_flow_from_the_nearest_step_before_that_assigns_them(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            cell("import os", "imports"),
            cell("def double(v):\n    return 2 * v\n\nclass Box:\n    pass", "functions"),
            cell("rate = 0.5\nepochs = 3", "pipeline-parameters"),
            cell("data = [1, 2, 3]\nscale = lambda v: v * rate", "step:load"),
            cell("left = [double(d) for d in data]", "step:left", "prev:load"),
            cell("data = data + [4]\nright = [scale(d) for d in data]", "step:right", "prev:load"),
            cell(
                "box = Box()\nbox.total = sum(left) + sum(right) + len(data)\nprint(os.sep)",
                "step:join",
                "prev:left",
                "prev:right",
            ),
        ],
    )
    pipeline = parse_notebook(notebook)
    assert pipeline.step("load").ins == ()
    assert pipeline.step("load").outs == ("data", "scale")
    assert pipeline.step("left").ins == (Marshaled("data", "load"),)
    assert pipeline.step("right").ins == (Marshaled("data", "load"), Marshaled("scale", "load"))
    # `data` is assigned again by `right`, the step nearest before `join`: that one is loaded
    assert set(pipeline.step("join").ins) == {
        Marshaled("data", "right"),
        Marshaled("left", "left"),
        Marshaled("right", "right"),
    }
    assert pipeline.step("right").outs == ("data", "right")
    # imports, functions and parameters are in every step: never marshaled
    every_in = {m.variable for s in pipeline.steps for m in s.ins}
    assert not every_in & {"os", "double", "Box", "rate", "epochs"}


def test_a_variable_a_step_assigns_before_reading_is_not_loaded(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            cell("x = 1\ny = 1", "step:a"),
            cell("x = 5\nprint(x)\ny += 1", "step:b", "prev:a"),
        ],
    )
    assert parse_notebook(notebook).step("b").ins == (Marshaled("y", "a"),)


def test_a_step_loads_nothing_from_a_step_it_does_not_run_after(tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path / "nb.ipynb", [cell("x = 1", "step:a"), cell("print(x)", "step:b")])
    pipeline = parse_notebook(notebook)
    assert pipeline.step("b").ins == () and pipeline.step("a").outs == ()


def test_parameters_are_typed_by_their_defaults_and_overrides_by_them(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            cell("lr = 0.1\nepochs = 3\nname = 'm'\nverbose = True\nneg: int = -2", "pipeline-parameters"),
            cell("print(lr, epochs, name, verbose, neg)", "step:only"),
        ],
    )
    pipeline = parse_notebook(notebook)
    assert [(p.name, p.type, p.default) for p in pipeline.parameters] == [
        ("lr", "float", 0.1),
        ("epochs", "int", 3),
        ("name", "str", "m"),
        ("verbose", "bool", True),
        ("neg", "int", -2),
    ]
    values = pipeline.parameter_values({"epochs": "7", "verbose": "false", "lr": "1e-3"})
    assert values == {"lr": 0.001, "epochs": 7, "name": "m", "verbose": False, "neg": -2}
    with pytest.raises(NotebookError, match=r"parameter epochs is an int: 'seven' is not one"):
        pipeline.parameter_values({"epochs": "seven"})
    with pytest.raises(NotebookError, match=r"no pipeline parameter is called 'epoch' \(the parameters: lr"):
        pipeline.parameter_values({"epoch": "1"})


def test_metrics_are_reported_by_the_last_step_that_assigns_them(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            cell("acc_score = 0.1", "step:a"),
            cell("acc_score = 0.9\nloss = 0.2", "step:b", "prev:a"),
            cell("print(acc_score)\nloss", "pipeline-metrics"),
        ],
    )
    pipeline = parse_notebook(notebook)
    assert [(m.name, m.variable, m.step) for m in pipeline.metrics] == [
        ("acc-score", "acc_score", "b"),
        ("loss", "loss", "b"),
    ]
    assert pipeline.metrics_cells == (2,)


def test_the_kubeflow_notebook_metadata_is_honoured(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "churn.ipynb",
        [cell("x = 1", "step:only")],
        pipeline_name="churn-model",
        experiment_name="churn",
        pipeline_description="predicts churn",
        docker_image="python:3.11",
        volumes=[
            {
                "name": "data-vol",
                "mount_point": "/home/jovyan/data",
                "type": "pvc",
                "size": 5,
                "size_type": "Gi",
                "annotations": [{"key": "rok/origin", "value": "rok://x"}],
            },
            {"name": "workspace-nb", "mount_point": "/home/jovyan", "type": "pvc", "snapshot": False},
        ],
    )
    pipeline = parse_notebook(notebook)
    assert (pipeline.name, pipeline.experiment, pipeline.description, pipeline.docker_image) == (
        "churn-model",
        "churn",
        "predicts churn",
        "python:3.11",
    )
    assert [(v.name, v.mount_point, v.workspace) for v in pipeline.volumes] == [
        ("workspace-nb", "/home/jovyan", True),
        ("data-vol", "/home/jovyan/data", False),
    ]
    assert pipeline.volumes[1].annotations == {"rok/origin": "rok://x"} and pipeline.volumes[1].size == 5


def test_without_metadata_the_notebook_names_the_pipeline_and_the_experiment(tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path / "My Model.ipynb", [cell("x = 1", "step:only")])
    pipeline = parse_notebook(notebook)
    assert (pipeline.name, pipeline.experiment, pipeline.volumes) == ("my-model", "my-model", ())


def test_pod_tags_go_with_their_step_and_the_task_name_is_a_dns_label(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [cell("x = 1", "step:load_data", "limit:nvidia.com/gpu:1", "annotation:team/owner:ml", "label:tier:gold")],
    )
    step = parse_notebook(notebook).step("load_data")
    assert step.task_name == "load-data"
    assert (step.limits, step.annotations, step.labels) == (
        {"nvidia.com/gpu": "1"},
        {"team/owner": "ml"},
        {"tier": "gold"},
    )


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (
            [cell("x = 1", "step:a"), cell("y = 1", "step:b", "prev:c")],
            r"cell 2 \[step:b, prev:c\]: prev:c names no step \(the steps: a, b\)",
        ),
        (
            [cell("x = 1", "step:a", "prev:b"), cell("y = 1", "step:b", "prev:a")],
            r"cell 2 \[step:b, prev:a\]: the steps wait for each other in a cycle: a → b → a",
        ),
        (
            [cell("x = 1", "step:a"), cell("# only a comment", "step:b"), cell("\n")],
            r"cell 2 \[step:b\]: step b has no code",
        ),
        ([cell("x = 1", "step:a", "step:b")], r"cell 1 \[step:a, step:b\]: contradictory tags"),
        ([cell("x = 1", "step:a", "imports")], r"cell 1 \[step:a, imports\]: contradictory tags"),
        ([cell("x = 1", "skip", "prev:a")], r"contradictory tags: a skip cell cannot have prev: tags"),
        ([cell("x = 1", "prev:a")], r"cell 1 \[prev:a\]: prev: tags need a step:NAME tag on the same cell"),
        ([cell("x = 1", "step:a", "prev:a")], r"step a cannot run after itself"),
        ([cell("x = 1", "step:Train")], r"'step:Train': a step's name is lower-case letters"),
        ([cell("x = 1", "step:a", "papermill")], r"cell 1 \[step:a, papermill\]: unknown tag 'papermill'"),
        ([cell("x = (", "step:a")], r"cell 1 \[step:a\]: line 1: '\(' was never closed"),
        (
            [cell("x = 1", "step:a"), cell("print(x)", "pipeline-metrics"), cell("y = 1", "step:b")],
            r"cell 3 \[step:b\]: a step after the pipeline-metrics cell",
        ),
        ([cell("x = 1", "step:a"), cell("print(nope)", "pipeline-metrics")], r"metric nope is assigned by no step"),
        ([cell("x = 1", "step:a"), cell("x + 1", "pipeline-metrics")], r"holds only `print\(name\)` lines"),
        (
            [cell("x = [1]", "pipeline-parameters"), cell("y = x", "step:a")],
            r"cell 1 \[pipeline-parameters\]: line 1: parameter x must be an int, float, str or bool constant",
        ),
        ([cell("x = 1", "imports")], r"no cell is tagged step:NAME"),
    ],
)
def test_a_wrong_notebook_is_refused_naming_the_cell(tmp_path: Path, cells: list, message: str) -> None:
    notebook = write_notebook(tmp_path / "nb.ipynb", cells)
    with pytest.raises(NotebookError, match=message) as caught:
        parse_notebook(notebook)
    assert str(caught.value).startswith(str(notebook))
    assert caught.value.exit_code == 2


def test_what_is_not_a_notebook_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.ipynb").write_text("{not json")
    with pytest.raises(NotebookError, match="is not a notebook"):
        parse_notebook(tmp_path / "bad.ipynb")
    with pytest.raises(NotebookError, match="cannot read notebook"):
        parse_notebook(tmp_path / "missing.ipynb")
