"""A run's clones of the notebook's volumes, for pipelines written with the KFP SDK (``rok compile`` builds its
pipelines with the same functions).

In a ``@dsl.pipeline``, :func:`clone_volumes` adds one ``create-volume-N`` task per notebook volume, the
workspace first. Each runs ``rok clone-pvc PVC --run RUN_ID --name-file FILE`` in rok's image
(:mod:`rokcli.clones`): the run's initial snapshot of the notebook's PVC, restored into a new PVC of the run,
whose name is the task's output. :meth:`Clones.mount` mounts the clones in tasks, at the notebook's mount points;
:func:`with_clones` does both for a whole pipeline function::

    from kfp import dsl
    from rok_pipeline_watcher.kfp.clones import with_clones

    @dsl.pipeline(name="churn")
    @with_clones({"workspace-nb-1": "/home/jovyan", "data-nb-1": "/data"}, notebook_pod="nb-1-0")
    def churn(max_tenure: int = 48) -> None:
        prepared = prepare(max_tenure=max_tenure)
        train(rows=prepared.output)

Every task of the pipeline then works on the run's clones: the notebook's own PVCs are never written by a run.
Each clone task's pod carries the annotation ``rok/notebook-pod`` (the KFP SDK cannot annotate the workflow), by
which the pipeline-watcher starts the run from the notebook's volumes and records the notebook server it came
from with the run.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rok_pipeline_watcher.argo import NOTEBOOK_POD_ANNOTATION

CLONE_COMMAND = ["rok", "clone-pvc"]  # in rok's image: PVC --run RUN_ID --name-file FILE (docs/restore.md)
# deploy/images/rok.Dockerfile, tagged as deploy/ tags rok's images (a cluster's registry goes in front: --rok-image)
DEFAULT_ROK_IMAGE = f"rok/rok:{importlib.metadata.version('rok-pipeline-watcher')}"


def this_notebook_pod(environ: Mapping[str, str] | None = None) -> str | None:
    """The notebook pod this code runs in (a pipeline compiled in a notebook server), if it runs in a pod."""
    env = os.environ if environ is None else environ
    if env.get("ROK_NOTEBOOK_POD"):
        return env["ROK_NOTEBOOK_POD"]
    return env.get("HOSTNAME") if env.get("KUBERNETES_SERVICE_HOST") else None


def clone_component(position: int, pvc: str, *, rok_image: str = DEFAULT_ROK_IMAGE) -> Any:
    """The component of ``create-volume-<position>``: clones the notebook's ``pvc``, outputs the clone's name."""
    from kfp import dsl

    def create_volume(name: dsl.OutputPath(str)) -> dsl.ContainerSpec:  # type: ignore[valid-type]
        return dsl.ContainerSpec(
            image=rok_image,
            command=CLONE_COMMAND,
            args=[pvc, "--run", dsl.PIPELINE_JOB_ID_PLACEHOLDER, "--name-file", name],
        )

    parameter = inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dsl.OutputPath(str))
    create_volume.__signature__ = inspect.Signature([parameter])  # type: ignore[attr-defined]
    create_volume.__name__ = create_volume.__qualname__ = f"create_volume_{position}"
    return dsl.container_component(create_volume)


@dataclass(frozen=True)
class Clones:
    """The ``create-volume-N`` tasks of a pipeline, with where each clone is mounted."""

    tasks: tuple[Any, ...]
    mount_paths: tuple[str, ...]

    def mount(self, *tasks: Any) -> None:
        """Mount every clone in each of ``tasks`` (at its notebook volume's mount point), after the clones exist."""
        from kfp import kubernetes

        for task in tasks:
            for clone, path in zip(self.tasks, self.mount_paths, strict=True):
                kubernetes.mount_pvc(task, pvc_name=clone.outputs["name"], mount_path=path)


def clone_volumes(
    volumes: Mapping[str, str],
    *,
    notebook_pod: str | None = None,
    rok_image: str = DEFAULT_ROK_IMAGE,
    registry_url: str | None = None,
) -> Clones:
    """Add a ``create-volume-N`` task per notebook PVC of ``volumes`` (claim name → mount path, the workspace
    first) to the pipeline being defined. ``notebook_pod`` (default: this pod, when run in a notebook server)
    names the notebook, ``registry_url`` is the tasks' ``ROK_REGISTRY_URL`` (default: the image's own)."""
    from kfp import kubernetes

    if not volumes:
        raise ValueError("clone_volumes needs the notebook's PVCs (claim name → mount path), the workspace first")
    notebook_pod = notebook_pod or this_notebook_pod()
    tasks = []
    for position, pvc in enumerate(volumes, start=1):
        task = clone_component(position, pvc, rok_image=rok_image)()
        task.set_caching_options(False)  # every run's clones are its own
        task.set_display_name(f"create-volume-{position}")
        if notebook_pod:
            kubernetes.add_pod_annotation(task, NOTEBOOK_POD_ANNOTATION, notebook_pod)
        if registry_url:
            task.set_env_variable("ROK_REGISTRY_URL", registry_url)
        tasks.append(task)
    return Clones(tuple(tasks), tuple(volumes.values()))


def with_clones(
    volumes: Mapping[str, str],
    *,
    notebook_pod: str | None = None,
    rok_image: str = DEFAULT_ROK_IMAGE,
    registry_url: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A pipeline function whose every task mounts the run's clones of ``volumes`` (see the module's example):
    the ``create-volume-N`` tasks come first, then the function's own tasks, each mounting every clone."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def pipeline(*args: Any, **kwargs: Any) -> Any:
            from kfp.dsl import pipeline_context

            clones = clone_volumes(volumes, notebook_pod=notebook_pod, rok_image=rok_image, registry_url=registry_url)
            defined = pipeline_context.Pipeline.get_default_pipeline()
            before = set(defined.tasks)
            result = function(*args, **kwargs)
            clones.mount(*(task for name, task in defined.tasks.items() if name not in before))
            return result

        return pipeline

    return decorate
