"""A pipeline compiled by the KFP SDK (``kfp.compiler``), read for ``rok run``.

The file holds the pipeline spec (KFP's IR) and, as a second YAML document, the kfp-kubernetes platform spec,
whose ``pvcMount`` entries say which PVC each task mounts where. :func:`load_kfp` reads both and refuses, before
anything runs, what this machine cannot run: a container image, a nested DAG, a PVC the pipeline creates.
:func:`local_pipeline` turns it into the runner's :class:`~rok_pipeline_watcher.runner.pipeline.Pipeline`,
one step per task, each step running :mod:`.launch` for its task with its PVCs at their mount paths.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rok_pipeline_watcher.kfp import mounts
from rok_pipeline_watcher.runner.pipeline import Pipeline, PipelineError, Step, Volume

EXECUTOR_MODULE = "kfp.dsl.executor_main"  # what every lightweight Python component's command runs
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_KINDS = {
    "NUMBER_INTEGER": "an integer",
    "NUMBER_DOUBLE": "a number",
    "BOOLEAN": "a boolean (true or false)",
    "LIST": "a JSON list",
    "STRUCT": "a JSON object",
}
_PVC_STUB_IMAGE = "argostub/"  # kfp-kubernetes' CreatePVC / DeletePVC tasks: the cluster does them, no container


@dataclass(frozen=True)
class Mount:
    pvc: str
    path: str


@dataclass(frozen=True)
class Task:
    name: str
    component: str
    after: tuple[str, ...]
    mounts: tuple[Mount, ...]


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # KFP's parameterType: STRING, NUMBER_INTEGER, NUMBER_DOUBLE, BOOLEAN, LIST, STRUCT
    default: Any
    optional: bool


@dataclass(frozen=True)
class KfpPipeline:
    path: Path
    name: str
    spec: dict[str, Any]
    tasks: tuple[Task, ...]
    parameters: tuple[Parameter, ...]

    def pvcs(self) -> list[str]:
        """The PVCs the tasks mount, in the order they first appear."""
        return list(dict.fromkeys(m.pvc for t in self.tasks for m in t.mounts))


def is_kfp_pipeline(path: Path) -> bool:
    """Whether ``path`` holds a KFP-compiled pipeline (rather than rok's own pipeline file)."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError):
        return False
    return bool(documents) and isinstance(documents[0], dict) and {"pipelineInfo", "root"} <= documents[0].keys()


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as error:
        raise PipelineError(f"cannot read pipeline file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise PipelineError(f"{path} is not valid YAML: {error}") from error
    spec = documents[0] if documents else None
    if not isinstance(spec, dict) or not {"pipelineInfo", "root", "components", "deploymentSpec"} <= spec.keys():
        raise PipelineError(f"{path} is not a pipeline compiled by the KFP SDK (no pipelineInfo, root, components)")
    platform: dict[str, Any] = {}
    for document in documents[1:]:
        if isinstance(document, dict) and "platforms" in document:
            platform = document["platforms"].get("kubernetes") or {}
    return spec, platform


def _mounts(executor: Mapping[str, Any], task: str, path: Path) -> tuple[Mount, ...]:
    found = []
    for entry in executor.get("pvcMount") or ():
        name = entry.get("constant") or entry.get("pvcNameParameter", {}).get("runtimeValue", {}).get("constant")
        if not name:
            raise PipelineError(
                f"{path}: task {task!r} mounts a PVC whose name is known only when the pipeline runs (the output of "
                "another task or a pipeline input); rok run maps PVCs by name: give mount_pvc a constant pvc_name"
            )
        where = str(entry.get("mountPath", ""))
        if not where.startswith("/"):
            raise PipelineError(
                f"{path}: task {task!r} mounts PVC {name!r} at {where!r}, which is not an absolute path: give "
                "mount_pvc a mount_path such as /data"
            )
        found.append(Mount(pvc=str(name), path=where))
    return tuple(found)


def _refuse_unrunnable(spec: dict[str, Any], name: str, component: dict[str, Any], path: Path) -> None:
    """Refuse, by the task's name, a task that this machine cannot run, saying what to do instead."""
    if "dag" in component:
        raise PipelineError(
            f"{path}: task {name!r} is a nested DAG (a dsl.ParallelFor, dsl.Condition or a pipeline used as a "
            "component), which rok run does not run on this machine: run the pipeline on Kubeflow with "
            "`rok submit`, or flatten it into tasks"
        )
    executor = spec["deploymentSpec"]["executors"].get(component.get("executorLabel", ""), {})
    if "importer" in executor:
        raise PipelineError(
            f"{path}: task {name!r} is a dsl.importer, which rok run does not run on this machine: run the pipeline "
            "on Kubeflow with `rok submit`, or read the file in a @dsl.component"
        )
    container = executor.get("container") or {}
    image = str(container.get("image", ""))
    command = [*container.get("command", ()), *container.get("args", ())]
    if image.startswith(_PVC_STUB_IMAGE):
        raise PipelineError(
            f"{path}: task {name!r} creates or deletes a PVC in the cluster (kubernetes.CreatePVC / DeletePVC), "
            "which this machine cannot do: mount an existing PVC with kubernetes.mount_pvc and map it to a "
            "directory with --volume PVC=DIR"
        )
    if not any(EXECUTOR_MODULE in str(part) for part in command) or command[:1] == ["python3"]:
        raise PipelineError(
            f"{path}: task {name!r} runs the container image {image!r} (a container component or a containerized "
            "Python component), which this machine cannot run: rok run runs lightweight Python components "
            "(@dsl.component without target_image); make the step one, or run the pipeline on Kubeflow with "
            "`rok submit`"
        )


def load_kfp(path: Path, *, runnable_here: bool = True) -> KfpPipeline:
    """Read a KFP-compiled pipeline; raises :class:`PipelineError` naming a task this machine cannot run.

    ``runnable_here=False`` reads only its name and inputs (for a cluster, which runs any task)."""
    spec, platform = _read(path)
    name = str(spec["pipelineInfo"].get("name") or path.stem)
    executors = (platform.get("deploymentSpec") or {}).get("executors") or {}
    dag = spec["root"].get("dag", {}).get("tasks") or {} if runnable_here else {}
    for task_name, task in dag.items():  # first what cannot run at all, then how the rest is wired
        _refuse_unrunnable(spec, task_name, spec["components"][task["componentRef"]["name"]], path)
    tasks = []
    for task_name, task in dag.items():
        if not _NAME.match(task_name):
            raise PipelineError(f"{path}: task name {task_name!r} must be lower-case letters, digits and '-'")
        component_name = task["componentRef"]["name"]
        component = spec["components"][component_name]
        if task.get("triggerPolicy", {}).get("condition"):
            raise PipelineError(
                f"{path}: task {task_name!r} runs on a condition, which rok run does not evaluate on this machine: "
                "run the pipeline on Kubeflow with `rok submit`"
            )
        tasks.append(
            Task(
                name=task_name,
                component=component_name,
                after=tuple(task.get("dependentTasks") or ()),
                mounts=_mounts(executors.get(component["executorLabel"], {}), task_name, path),
            )
        )
    if not tasks and runnable_here:
        raise PipelineError(f"{path}: the pipeline has no tasks")
    parameters = tuple(
        Parameter(
            name=key,
            type=str(value.get("parameterType", "STRING")),
            default=value.get("defaultValue"),
            optional=bool(value.get("isOptional")) or "defaultValue" in value,
        )
        for key, value in ((spec["root"].get("inputDefinitions") or {}).get("parameters") or {}).items()
    )
    if (spec["root"].get("inputDefinitions") or {}).get("artifacts") and runnable_here:
        raise PipelineError(f"{path}: the pipeline takes input artifacts, which rok run cannot pass in")
    return KfpPipeline(path=path.resolve(), name=name, spec=spec, tasks=tuple(tasks), parameters=parameters)


def _typed(parameter: Parameter, text: str) -> Any:
    """A ``-p NAME=VALUE`` value, typed as the pipeline input is."""
    try:
        match parameter.type:
            case "NUMBER_INTEGER":
                return int(text)
            case "NUMBER_DOUBLE":
                return float(text)
            case "BOOLEAN":
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                return text.lower() in ("true", "1")
            case "LIST" | "STRUCT":
                value = json.loads(text)
                if not isinstance(value, list if parameter.type == "LIST" else dict):
                    raise ValueError(text)
                return value
            case _:
                return text
    except ValueError as error:
        kind = _KINDS.get(parameter.type, parameter.type.lower())
        raise PipelineError(f"parameter {parameter.name!r} is {kind}; {text!r} is not one") from error


def arguments(pipeline: KfpPipeline, given: Mapping[str, str]) -> dict[str, Any]:
    """The pipeline's inputs: ``given`` (``-p NAME=VALUE``, typed), the defaults for the rest."""
    known = {p.name: p for p in pipeline.parameters}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise PipelineError(
            f"{pipeline.path}: the pipeline has no parameter {', '.join(map(repr, unknown))} "
            f"(its parameters: {', '.join(known) or 'none'})"
        )
    values: dict[str, Any] = {}
    for parameter in pipeline.parameters:
        if parameter.name in given:
            values[parameter.name] = _typed(parameter, given[parameter.name])
        elif parameter.default is not None:
            default = parameter.default
            values[parameter.name] = int(default) if parameter.type == "NUMBER_INTEGER" else default
        elif not parameter.optional:
            raise PipelineError(f"{pipeline.path}: parameter {parameter.name!r} has no default: give -p NAME=VALUE")
    return values


def local_pipeline(
    pipeline: KfpPipeline, volumes: Mapping[str, Path], values: Mapping[str, Any], *, experiment: str | None = None
) -> Pipeline:
    """The runner's pipeline for ``pipeline``: its PVCs mapped to directories (``--volume PVC=DIR``, the first
    one the workspace, where the tasks' outputs are kept), one step per task running :mod:`.launch`, in a mount
    namespace of its own (:mod:`.mounts`) when the task mounts a PVC."""
    missing = [pvc for pvc in pipeline.pvcs() if pvc not in volumes]
    if missing:
        users = {pvc: [t.name for t in pipeline.tasks if any(m.pvc == pvc for m in t.mounts)] for pvc in missing}
        raise PipelineError(
            f"{pipeline.path}: "
            + "; ".join(
                f"PVC {pvc!r} (mounted by {', '.join(users[pvc])}) is mapped to no directory" for pvc in missing
            )
            + ": give rok run --volume PVC=DIR for each"
        )
    if not volumes:
        raise PipelineError(
            f"{pipeline.path}: the pipeline mounts no PVC: give rok run a directory for its outputs with "
            "--volume NAME=DIR (it is snapshotted around every task)"
        )
    for name, directory in volumes.items():
        if not _NAME.match(name):
            raise PipelineError(f"--volume {name}={directory}: the name must be lower-case letters, digits and '-'")
        if not directory.is_dir():
            raise PipelineError(f"--volume {name}={directory}: {directory} is not a directory")
    steps = [
        Step(
            name=task.name,
            after=task.after,
            run=shlex.join(
                [
                    *(mounts.wrapper([(m.pvc, m.path) for m in task.mounts]) if task.mounts else ()),
                    sys.executable,
                    "-m",
                    "rok_pipeline_watcher.kfp.launch",
                    str(pipeline.path),
                    task.name,
                    "--arguments",
                    json.dumps(dict(values), sort_keys=True),
                ]
            ),
        )
        for task in pipeline.tasks
    ]
    try:
        return Pipeline(
            pipeline=pipeline.name,
            experiment=experiment or pipeline.name,
            volumes=tuple(Volume(name=name, path=directory.resolve()) for name, directory in volumes.items()),
            steps=tuple(steps),
        )
    except ValueError as error:
        raise PipelineError(f"{pipeline.path}: {error}") from error
