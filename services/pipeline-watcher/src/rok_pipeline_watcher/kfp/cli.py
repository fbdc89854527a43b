"""``rok compile NOTEBOOK.ipynb`` and ``rok submit NOTEBOOK.ipynb | PIPELINE.yaml``: Kubeflow Pipelines v2 packages
built with the KFP SDK, and runs of them started through its client."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from rok_pipeline_watcher.kfp.clones import DEFAULT_ROK_IMAGE

F = TypeVar("F", bound=Callable[..., Any])

TOKEN_PATH_VARIABLE = "KF_PIPELINES_SA_TOKEN_PATH"  # the KFP SDK's own: a projected service account token


def _token(token: str | None, token_file: Path | None) -> str | None:
    if token:
        return token
    path = token_file or (Path(os.environ[TOKEN_PATH_VARIABLE]) if os.environ.get(TOKEN_PATH_VARIABLE) else None)
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as error:
        from rok_pipeline_watcher.kfp.submit import SubmitError

        raise SubmitError(f"cannot read the KFP API token from {path}: {error.strerror}") from error


def _compile_options(command: F) -> F:
    for option in reversed(
        [
            click.option("--image", default=None, help="the steps' image (default: the notebook's docker_image)"),
            click.option(
                "--rok-image",
                default=DEFAULT_ROK_IMAGE,
                show_default=True,
                envvar="ROK_IMAGE",
                help="the image of the create-volume tasks (has the rok command)",
            ),
            click.option(
                "--notebook-pod",
                default=None,
                envvar="ROK_NOTEBOOK_POD",
                help="the notebook server's pod the runs start from (default: this pod, in a notebook server)",
            ),
            click.option(
                "--rok-registry",
                "registry_url",
                default=None,
                help="ROK_REGISTRY_URL of the create-volume tasks (default: their image's); "
                "rok submit asks it for the experiment's bucket (default: $ROK_REGISTRY_URL)",
            ),
            click.option(
                "--rok-web",
                default="http://127.0.0.1:8470",
                show_default=True,
                envvar="ROK_WEB_URL",
                help="rok's web UI, which the steps' links point at",
            ),
        ]
    ):
        command = option(command)
    return command


@click.command("compile")
@click.argument("notebook", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="the package")
@_compile_options
def compile_(
    notebook: Path,
    output: Path,
    image: str | None,
    rok_image: str,
    notebook_pod: str | None,
    registry_url: str | None,
    rok_web: str,
) -> None:
    """Compile a Kale-tagged NOTEBOOK into a Kubeflow Pipelines v2 package with the KFP SDK (docs/pipelines.md)."""
    from rok_pipeline_watcher.kfp.compile import compile_notebook

    compiled = compile_notebook(
        notebook,
        output,
        image=image,
        rok_image=rok_image,
        rok_web=rok_web,
        notebook_pod=notebook_pod,
        registry_url=registry_url,
    )
    click.echo(f"compiled {compiled.name}: {len(compiled.steps)} steps into {output}")


@click.command("submit")
@click.argument("source", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--endpoint", envvar="KF_PIPELINES_ENDPOINT", required=True, help="the KFP API (env KF_PIPELINES_ENDPOINT)"
)
@click.option("--token", envvar="KF_PIPELINES_TOKEN", default=None, help="bearer token for the KFP API")
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help=f"file holding the token (default: ${TOKEN_PATH_VARIABLE}, as the KFP SDK reads it)",
)
@click.option("--namespace", default=None, help="the Kubeflow profile (namespace) to run in")
@click.option("--experiment", default=None, help="the experiment (default: the notebook's, or the pipeline's name)")
@click.option("-p", "--parameter", "parameters", multiple=True, metavar="NAME=VALUE", help="a pipeline input")
@_compile_options
def submit(
    source: Path,
    endpoint: str,
    token: str | None,
    token_file: Path | None,
    namespace: str | None,
    experiment: str | None,
    parameters: tuple[str, ...],
    image: str | None,
    rok_image: str,
    notebook_pod: str | None,
    registry_url: str | None,
    rok_web: str,
) -> None:
    """Upload SOURCE (a Kale-tagged notebook, compiled first, or a KFP-compiled pipeline) as a new pipeline
    version and start a run of it; print the run's id and its rok URL.

    rok's registry (--rok-registry, else ROK_REGISTRY_URL; token ROK_TOKEN, else the pod's service account token)
    names the experiment's bucket first: the KFP experiment is named as the bucket, and the run with its suffix."""
    from rokcommon.registry_http import Remote
    from rokcommon.settings import RokSettings
    from rokcommon.settings import load as load_settings

    from rok_pipeline_watcher.kfp.local import pairs
    from rok_pipeline_watcher.kfp.spec import arguments, is_kfp_pipeline, load_kfp
    from rok_pipeline_watcher.kfp.submit import SubmitError
    from rok_pipeline_watcher.kfp.submit import submit as submit_package

    given = pairs(parameters, "-p")
    with tempfile.TemporaryDirectory(prefix="rok-submit-") as scratch:
        if source.suffix == ".ipynb":
            from rok_pipeline_watcher.kfp.compile import compile_notebook

            package = Path(scratch) / "pipeline.yaml"
            compiled = compile_notebook(
                source,
                package,
                image=image,
                rok_image=rok_image,
                rok_web=rok_web,
                notebook_pod=notebook_pod,
                registry_url=registry_url,
            )
            experiment = experiment or compiled.experiment
        elif is_kfp_pipeline(source):
            package = source
        else:
            raise SubmitError(
                f"{source} is neither a notebook nor a pipeline compiled by the KFP SDK: rok's own pipeline files "
                "run on this machine with `rok run`"
            )
        pipeline = load_kfp(package, runnable_here=False)
        values = {k: v for k, v in arguments(pipeline, given).items() if k in given}
        settings = load_settings(RokSettings)
        done = submit_package(
            package,
            pipeline_name=pipeline.name,
            endpoint=endpoint,
            token=_token(token, token_file),
            namespace=namespace,
            experiment=experiment or pipeline.name,
            parameters=values,
            rok_web=rok_web,
            rok_namespace=namespace or settings.namespace,
            registry=Remote.from_environment(
                {**os.environ, **({"ROK_REGISTRY_URL": registry_url} if registry_url else {})}
            ),
        )
    click.echo(f"run {done.run_id} ({done.run_name}) in experiment {done.experiment}")
    click.echo(f"  kfp  {done.kfp_url}")
    click.echo(f"  rok  {done.rok_url}")
