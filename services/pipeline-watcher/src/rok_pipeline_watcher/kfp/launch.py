"""One task of a KFP-compiled pipeline, run on this machine by the KFP SDK's own local execution
(``kfp.local``): ``python -m rok_pipeline_watcher.kfp.launch PIPELINE.yaml TASK --arguments JSON``.

The runner starts it as the task's step, in the run's clone of the workspace, between the task's two committed
snapshots, in the task's own mount namespace, where each PVC the task mounts is at its mount path
(:mod:`.mounts`). The task's inputs are resolved as KFP resolves them (constants, pipeline inputs, the outputs of
the tasks it reads from); its outputs, parameters and artifacts alike, are kept in ``.kfp/<pipeline>/<task>/`` of
the workspace, so every after-snapshot holds them and the tasks after it read them from there.

The component runs in rok's own Python environment: the ``pip install`` that its command starts with (kfp and
``packages_to_install``) is left out, so that a run never changes the environment it runs in; a package it asks
for that is not installed is named before the task starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from rok_pipeline_watcher.kfp.mounts import volume_variable

KEEP = ".kfp"  # the folder of the workspace where the tasks' outputs are kept
OUTPUTS = "outputs.json"


def _artifact_to_json(artifact: Any) -> dict[str, Any]:
    return {
        "artifact": artifact.schema_title,
        "name": artifact.name,
        "uri": artifact.uri,
        "metadata": artifact.metadata,
    }


def _artifact_from_json(value: dict[str, Any]) -> Any:
    from kfp.dsl.types import artifact_types

    kind = artifact_types._SCHEMA_TITLE_TO_TYPE.get(value["artifact"], artifact_types.Artifact)
    return kind(name=value["name"], uri=value["uri"], metadata=value["metadata"])


def _encode(value: Any) -> Any:
    if isinstance(value, list) and value and all(hasattr(v, "schema_title") for v in value):
        return {"artifacts": [_artifact_to_json(v) for v in value]}
    if hasattr(value, "schema_title") and hasattr(value, "uri"):
        return _artifact_to_json(value)
    return {"value": value}


def _decode(value: dict[str, Any]) -> Any:
    if "artifacts" in value:
        return [_artifact_from_json(v) for v in value["artifacts"]]
    if "artifact" in value:
        return _artifact_from_json(value)
    return value["value"]


def _packages(command: list[str]) -> list[str]:
    """The packages a lightweight component's ``pip install`` asks for, kfp left out (it runs it)."""
    install = next((part for part in command if "pip install" in part), "")
    wanted = []
    for quoted in re.findall(r"'([^']+)'", install.split("pip install", 1)[-1].split("&&", 1)[0]):
        if quoted.startswith("-") or ";" in quoted:  # an option, or a requirement for other Pythons
            continue
        name = re.split(r"[<>=!~\[ @]", quoted, maxsplit=1)[0]
        if name and name.lower() not in ("kfp", "kfp-kubernetes"):
            wanted.append(name)
    return wanted


def _without_install(command: list[str]) -> list[str]:
    """The component's command without its ``sh -c "pip install … && "$0" "$@"" prelude."""
    if command[:2] == ["sh", "-c"] and len(command) > 2 and "pip install" in command[2]:
        return command[3:]
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rok-kfp-launch", description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("task")
    parser.add_argument("--arguments", default="{}", help="the pipeline's inputs, as JSON")
    options = parser.parse_args(argv)

    from google.protobuf import json_format
    from kfp import local
    from kfp.local import io, status, task_dispatcher
    from kfp.local import utils as kfp_utils
    from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils
    from kfp.pipeline_spec import pipeline_spec_pb2

    from rok_pipeline_watcher.kfp.spec import _read

    raw, platform = _read(options.pipeline)
    spec = json_format.ParseDict(raw, pipeline_spec_pb2.PipelineSpec())
    task_spec = spec.root.dag.tasks[options.task]
    component_name = task_spec.component_ref.name
    component_spec = spec.components[component_name]
    executor_spec = kfp_utils.struct_to_executor_spec(
        task_dispatcher.get_executor_spec(spec, component_spec.executor_label)
    )
    container = executor_spec.container
    command = [*container.command, *container.args]

    missing = []
    for package in _packages(command):
        try:
            metadata.version(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
    if missing:
        sys.stderr.write(
            f"task {options.task!r} needs the packages {', '.join(missing)} (packages_to_install), which rok run "
            f"does not install: install them into rok's environment ({sys.prefix})\n"
        )
        return 3

    workspace = Path(os.environ.get("ROK_WORKSPACE", "."))
    root = workspace / KEEP
    pipeline_name = spec.pipeline_info.name
    io_store = io.IOStore()
    for key, value in json.loads(options.arguments).items():
        io_store.put_parent_input(key, value)
    for producer in task_spec.dependent_tasks:
        kept = root / pipeline_name / producer / OUTPUTS
        if kept.is_file():
            for key, value in json.loads(kept.read_text()).items():
                io_store.put_task_output(producer, key, _decode(value))

    del container.command[:]
    del container.args[:]
    container.command.extend(_without_install(command))

    # Each PVC's clone is at the task's mount path (this process runs in the task's mount namespace, see
    # .mounts); the directory is in the environment too.
    mounts = (platform.get("deploymentSpec") or {}).get("executors", {}).get(component_spec.executor_label, {})
    for entry in mounts.get("pvcMount") or ():
        pvc = entry.get("constant") or entry["pvcNameParameter"]["runtimeValue"]["constant"]
        directory = os.environ.get(volume_variable(pvc))
        if directory:
            variable = container.env.add()
            variable.name, variable.value = volume_variable(pvc), directory

    # the task's log (what kfp.local prints of it) goes to stderr, as the runner's own lines do
    with contextlib.redirect_stdout(sys.stderr):
        outputs, outcome = task_dispatcher.run_single_task_implementation(
            pipeline_resource_name=pipeline_name,
            component_name=f"comp-{options.task}",  # the task's own folder, even where tasks share a component
            component_spec=component_spec,
            executor_spec=executor_spec,
            arguments=OrchestratorUtils.make_task_arguments(task_spec.inputs, io_store),
            pipeline_root=str(root),
            runner=local.SubprocessRunner(use_venv=False),
            raise_on_error=False,
            block_input_artifact=False,
            unique_pipeline_id=os.environ.get("ROK_RUN_ID", "local"),
        )
    if outcome != status.Status.SUCCESS:
        return 1
    kept = root / pipeline_name / options.task / OUTPUTS
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps({key: _encode(value) for key, value in outputs.items()}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
