"""``rok compile NOTEBOOK.ipynb``: a Kale-tagged notebook as a Kubeflow Pipelines v2 pipeline, built with the KFP
SDK (``kfp.dsl``, ``kfp.kubernetes``) and compiled by its compiler.

The pipeline, for a notebook with volumes V1…Vn (the workspace first) and steps S…:

* ``create-volume-1`` … ``create-volume-n`` first: each asks rok, in ``--rok-image``, to snapshot the notebook's
  PVC and to create a PVC of the run from that snapshot (``rok clone-pvc``, docs/restore.md), and outputs the
  new PVC's name (:mod:`rok_pipeline_watcher.kfp.clones`, which SDK pipelines use too); their pods name the
  notebook pod (``rok/notebook-pod``), which the run starts from;
* one task per step, after its ``prev:`` steps, in the notebook's image (``docker_image``, or ``--image``),
  mounting every clone at its volume's mount point; its inputs are the pipeline's parameters (the
  ``pipeline-parameters`` cell's values as defaults). It runs the step with rok's notebook step executor
  (:mod:`rok_pipeline_watcher.notebook.executor`, a script that needs only Python and cloudpickle, embedded in
  the task), whose marshal folder is ``.rok/marshal/<run id>/`` of the workspace clone, as in a local run;
* each step's task first writes a KFP Markdown visualization (an output artifact ``rok``) with the links to its
  before- and after-snapshots in rok's web UI: the task knows its run's id and its name, so the links are
  written before the snapshots are committed, and resolve once they are.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rok_pipeline_watcher.kfp.clones import clone_volumes
from rok_pipeline_watcher.notebook.model import NotebookError, NotebookPipeline, NotebookStep

_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}

# The step task's program (python3 -c): argv is the step's spec (JSON, without parameters and marshal folder),
# the executor's source, the Markdown artifact's path, the run's id, the workspace's mount point, the
# notebook's directory inside it, rok's web UI, then NAME VALUE for each parameter.
BOOTSTRAP = """
import json, os, subprocess, sys, tempfile
from urllib.parse import urlencode
spec, source, ui, run, workspace, subdir, web = json.loads(sys.argv[1]), *sys.argv[2:8]
kinds = spec.pop("parameter_types")
def typed(name, text):
    kind = kinds[name]
    if kind == "bool":
        return text.strip().lower() in ("true", "1", "yes", "on")
    return {"int": int, "float": float}.get(kind, str)(text)
pairs = sys.argv[8:]
spec["parameters"] = {pairs[i]: typed(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)}
marshal = os.path.join(workspace, ".rok", "marshal", run)
spec["marshal_dir"] = marshal
own = os.path.join(marshal, spec["step"])
os.makedirs(own, exist_ok=True)
account = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
namespace = open(account).read().strip() if os.path.exists(account) else ""
task = spec.pop("task")
def link(phase):
    return web.rstrip("/") + "/steps?" + urlencode({"ns": namespace, "run": run, "step": task, "phase": phase})
os.makedirs(os.path.dirname(ui), exist_ok=True)
with open(ui, "w") as out:
    out.write(f"## rok: step {task}\\n\\n")
    out.write(f"* [before-snapshot]({link('before')})\\n* [after-snapshot]({link('after')})\\n")
with open(os.path.join(own, "spec.json"), "w") as out:
    json.dump(spec, out, indent=1)
executor = os.path.join(tempfile.mkdtemp(), "executor.py")
with open(executor, "w") as out:
    out.write(source)
step = [sys.executable, executor, os.path.join(own, "spec.json")]
sys.exit(subprocess.call(step, cwd=os.path.join(workspace, subdir)))
"""


def _signed(function: Callable[..., Any], name: str, parameters: list[inspect.Parameter]) -> Callable[..., Any]:
    """``function`` under ``name`` with ``parameters`` as its signature: the KFP SDK reads a component's or a
    pipeline's interface from its function's signature, and a notebook's parameters are known only now."""
    function.__name__ = function.__qualname__ = name
    function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in parameters}
    return function


def _executor_source() -> str:
    from rok_pipeline_watcher.notebook import executor

    return Path(executor.__file__).read_text(encoding="utf-8")


def _step_spec(notebook: NotebookPipeline, step: NotebookStep) -> dict[str, Any]:
    """What the executor runs for ``step`` (as a local run's spec), without the run's values."""
    from rok_pipeline_watcher.notebook.local import NotebookSteps

    steps = NotebookSteps(notebook, workspace=notebook.path.parent, parameters={})
    spec = steps.spec(step, Path("/"))
    spec.pop("parameters", None)
    spec.pop("marshal_dir", None)
    spec["task"] = step.task_name
    spec["parameter_types"] = {p.name: p.type for p in notebook.parameters}
    return spec


def _notebook_subdir(notebook: NotebookPipeline) -> str:
    """Where the notebook sits inside its workspace volume: where its steps run, as in the notebook server."""
    assert notebook.workspace is not None
    mount = Path(notebook.workspace.mount_point)
    if notebook.path.parent.is_relative_to(mount):
        return str(notebook.path.parent.relative_to(mount))
    return "."


def pipeline_of(
    notebook: NotebookPipeline,
    *,
    image: str | None,
    rok_image: str,
    rok_web: str,
    notebook_pod: str | None = None,
    registry_url: str | None = None,
) -> Any:
    """The notebook as a KFP pipeline (a ``GraphComponent``), ready for ``kfp.compiler.Compiler().compile``."""
    from kfp import dsl

    image = image or notebook.docker_image
    if not image:
        raise NotebookError(
            f"{notebook.path}: no image for the steps: set docker_image in the notebook's kubeflow_notebook metadata "
            "(Kale's deployment panel), or give --image"
        )
    workspace = notebook.workspace
    if workspace is None:
        raise NotebookError(
            f"{notebook.path}: the notebook lists no volumes (kubeflow_notebook.volumes): its steps pass variables "
            "through the workspace volume, so name it there (its PVC and mount point)"
        )
    source = _executor_source()
    subdir = _notebook_subdir(notebook)
    inputs = [
        inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=_TYPES[p.type], default=p.default)
        for p in notebook.parameters
    ]

    def step_component(step: NotebookStep) -> Any:
        spec = json.dumps(_step_spec(notebook, step), sort_keys=True)

        def run_step(*values: Any) -> dsl.ContainerSpec:
            *parameters, ui = values
            pairs: list[Any] = []
            for parameter, value in zip(notebook.parameters, parameters, strict=True):
                pairs += [parameter.name, value]
            return dsl.ContainerSpec(
                image=image,
                command=["python3", "-c", BOOTSTRAP],
                args=[
                    spec,
                    source,
                    ui.path,
                    dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                    workspace.mount_point,
                    subdir,
                    rok_web,
                    *pairs,
                ],
            )

        ui = inspect.Parameter("rok", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dsl.Output[dsl.Markdown])
        plain = [p.replace(default=inspect.Parameter.empty) for p in inputs]
        return dsl.container_component(_signed(run_step, step.name, [*plain, ui]))

    components = {s.name: step_component(s) for s in notebook.steps}

    def pipeline(*values: Any) -> None:
        arguments = {p.name: v for p, v in zip(notebook.parameters, values, strict=True)}
        clones = clone_volumes(
            {v.name: v.mount_point for v in notebook.volumes},
            notebook_pod=notebook_pod,
            rok_image=rok_image,
            registry_url=registry_url,
        )
        tasks: dict[str, Any] = {}
        for step in notebook.order():
            task = components[step.name](**arguments)
            task.set_caching_options(False)  # every run's snapshots are its own
            task.set_display_name(step.name)
            clones.mount(task)
            for prev in step.prev:
                task.after(tasks[prev])
            tasks[step.name] = task

    signed = _signed(pipeline, notebook.name.replace("-", "_"), inputs)
    return dsl.pipeline(name=notebook.name, description=notebook.description or None)(signed)


def compile_notebook(
    path: Path,
    output: Path,
    *,
    image: str | None,
    rok_image: str,
    rok_web: str,
    notebook_pod: str | None = None,
    registry_url: str | None = None,
) -> NotebookPipeline:
    """Parse the notebook at ``path`` and write its KFP v2 package to ``output``; the notebook is returned."""
    from kfp import compiler

    from rok_pipeline_watcher.notebook.parser import parse_notebook

    notebook = parse_notebook(path)
    pipeline = pipeline_of(
        notebook,
        image=image,
        rok_image=rok_image,
        rok_web=rok_web,
        notebook_pod=notebook_pod,
        registry_url=registry_url,
    )
    compiler.Compiler().compile(pipeline, str(output))
    return notebook
