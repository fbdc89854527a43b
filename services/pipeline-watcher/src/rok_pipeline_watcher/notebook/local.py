"""A notebook run on this machine: the notebook as the local runner's pipeline, and its steps' launcher.

Each step becomes a step of :class:`~rok_pipeline_watcher.runner.pipeline.Pipeline` (named as its KFP task,
after its ``prev:`` steps), so it runs through the same runner, snapshots and registry as a pipeline file. The
launcher runs a step as ``python executor.py SPEC`` (:mod:`.executor`), a process of its own, in the run's
clone of the notebook's directory; the variables, the executed notebook and the metrics go through the hidden
folder ``.rok/marshal/<run id>/`` at the root of the workspace clone.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from rok_pipeline_watcher.notebook import executor
from rok_pipeline_watcher.notebook.model import NotebookError, NotebookPipeline, NotebookStep, Value
from rok_pipeline_watcher.notebook.parser import parse_notebook
from rok_pipeline_watcher.runner.pipeline import Pipeline, Step, Volume

MARSHAL_DIR = Path(".rok") / "marshal"


def marshal_dir(workspace: Path, run_id: str) -> Path:
    """The run's hidden folder in (a clone of) the workspace volume."""
    return workspace / MARSHAL_DIR / run_id


def local_volumes(notebook: NotebookPipeline, given: Mapping[str, Path]) -> list[tuple[str, Path]]:
    """Each notebook volume's directory on this machine, the workspace first: ``given`` (``--volume NAME=DIR``),
    else, for the workspace, the notebook's own directory. Without volumes in its metadata, a notebook has one,
    ``workspace``, its directory."""
    declared = [v.name for v in notebook.volumes] or ["workspace"]
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise NotebookError(
            f"{notebook.path}: --volume {unknown[0]}: the notebook has no volume of that name "
            f"(its volumes: {', '.join(declared)})"
        )
    chosen: list[tuple[str, Path]] = []
    for position, name in enumerate(declared):
        if name in given:
            chosen.append((name, given[name].absolute()))
        elif position == 0:
            chosen.append((name, notebook.path.parent))
        else:
            mount = notebook.volumes[position].mount_point
            raise NotebookError(
                f"{notebook.path}: volume {name} (mounted at {mount} in the notebook server) has no directory on "
                f"this machine: give one with --volume {name}=DIR"
            )
    return chosen


def runner_pipeline(notebook: NotebookPipeline, volumes: list[tuple[str, Path]]) -> Pipeline:
    """The notebook as the local runner's pipeline (its volumes' directories as :func:`local_volumes` says)."""
    for name, path in volumes:
        if not path.is_dir():
            raise NotebookError(f"{notebook.path}: volume {name!r} is {path}, which is not a directory")
    workspace = volumes[0][1]
    if not notebook.path.is_relative_to(workspace):
        raise NotebookError(
            f"{notebook.path}: the notebook is not in its workspace volume {workspace}: steps run in the "
            "notebook's directory inside the workspace"
        )
    steps = [
        Step(
            name=step.task_name,
            run=_describe(step),
            after=tuple(notebook.step(p).task_name for p in step.prev),
        )
        for step in notebook.steps
    ]
    return Pipeline(
        pipeline=notebook.name,
        experiment=notebook.experiment,
        volumes=tuple(Volume(name=name, path=path) for name, path in volumes),
        steps=tuple(steps),
    )


def _describe(step: NotebookStep) -> str:
    cells = ", ".join(str(i + 1) for i in step.cells)
    return f"cell{'s' if len(step.cells) > 1 else ''} {cells}"


class NotebookSteps:
    """The runner's launcher for a notebook's steps (a :class:`~rok_pipeline_watcher.runner.engine.StepLauncher`)."""

    def __init__(
        self,
        notebook: NotebookPipeline,
        *,
        workspace: Path,
        parameters: Mapping[str, Value],
        python: str | None = None,
    ) -> None:
        self.notebook = notebook
        self.parameters = dict(parameters)
        self.python = python or sys.executable
        # where the steps run, relative to the workspace: the notebook's own directory, as in a notebook server
        self.subdir = notebook.path.parent.relative_to(workspace)
        self.by_task = {s.task_name: s for s in notebook.steps}
        self.reported: dict[str, float] = {}
        self.failures: dict[str, str] = {}
        document = json.loads(notebook.path.read_text(encoding="utf-8"))  # once: the notebook may change meanwhile
        self.cells: list[dict[str, object]] = document["cells"]
        metadata = document.get("metadata") or {}
        self.metadata = {k: metadata[k] for k in ("kernelspec", "language_info", "kubeflow_notebook") if k in metadata}

    def spec(self, step: NotebookStep, marshal: Path) -> dict[str, object]:
        notebook = self.notebook

        def source(index: int) -> str:
            text = self.cells[index].get("source", "")
            return "".join(text) if isinstance(text, list) else str(text)

        def tags(index: int) -> list[str]:
            metadata = self.cells[index].get("metadata")
            found = metadata.get("tags") if isinstance(metadata, dict) else None
            return [str(t) for t in found] if isinstance(found, list) else []

        # the parameters first, as values; then the imports and the functions, as Kale orders them
        roles = [("parameters", i) for i in notebook.parameters_cells[:1]]
        roles += [("imports", i) for i in notebook.imports_cells] + [("functions", i) for i in notebook.functions_cells]
        roles += [("step", i) for i in step.cells]
        chosen = [{"index": i, "role": role, "source": source(i), "tags": tags(i)} for role, i in roles]
        return {
            "step": step.name,
            "notebook": notebook.path.name,
            "marshal_dir": str(marshal),
            "parameters": self.parameters,
            "cells": chosen,
            "loads": [{"variable": m.variable, "step": m.step} for m in step.ins],
            "saves": list(step.outs),
            "metrics": {m.name: m.variable for m in notebook.metrics if m.step == step.name},
            "metadata": self.metadata,
        }

    async def launch(self, step: str, workspace: Path, env: dict[str, str]) -> int:
        notebook_step = self.by_task[step]
        marshal = marshal_dir(workspace, env["ROK_RUN_ID"])
        (marshal / notebook_step.name).mkdir(parents=True, exist_ok=True)
        spec_file = marshal / notebook_step.name / "spec.json"
        spec_file.write_text(json.dumps(self.spec(notebook_step, marshal), indent=1) + "\n")
        env = {**env, "ROK_MARSHAL_DIR": str(marshal), "PYTHONUNBUFFERED": "1"}
        process = await asyncio.create_subprocess_exec(
            self.python, executor.__file__, str(spec_file), cwd=workspace / self.subdir, env=env
        )
        code = await process.wait()
        own = marshal / notebook_step.name
        if code != 0:
            failure = own / "failure.txt"
            self.failures[step] = failure.read_text().strip() if failure.exists() else ""
        metrics = own / "metrics.json"
        if code == 0 and metrics.exists():
            self.reported.update(json.loads(metrics.read_text()))
        return code

    def failure(self, step: str) -> str | None:
        return self.failures.get(step) or None

    def metrics(self) -> dict[str, float]:
        return dict(self.reported)


def parse_assignments(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    """``NAME=VALUE`` options as a mapping; a pair without ``=`` is a :class:`NotebookError` naming it."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise NotebookError(f"{what} {pair!r}: write NAME=VALUE")
        found[name.strip()] = value
    return found


def notebook_run(
    path: Path, parameters: tuple[str, ...], volumes: tuple[str, ...], python: str | None
) -> tuple[Pipeline, NotebookSteps]:
    """What ``rok run NOTEBOOK.ipynb -p NAME=VALUE --volume NAME=DIR --python PYTHON`` runs, all checked."""
    notebook = parse_notebook(path)
    values = notebook.parameter_values(parse_assignments(parameters, "-p"))
    given = {name: Path(directory) for name, directory in parse_assignments(volumes, "--volume").items()}
    directories = local_volumes(notebook, given)
    pipeline = runner_pipeline(notebook, directories)
    if python is not None and os.sep in python and not Path(python).is_file():
        raise NotebookError(f"--python {python}: no such file")
    return pipeline, NotebookSteps(notebook, workspace=directories[0][1], parameters=values, python=python)
