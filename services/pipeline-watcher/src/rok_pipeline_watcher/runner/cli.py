"""``rok run PIPELINE.yaml`` / ``rok run NOTEBOOK.ipynb``: run a pipeline on this machine, every step between two
committed snapshots.

A YAML file is rok's own pipeline file (docs/pipelines.md) or a pipeline compiled by the KFP SDK, told apart by
what it holds."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("run")
@click.argument("pipeline_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="seconds to wait for each snapshot's commit and for the clone",
)
@click.option(
    "--parallelism", type=click.IntRange(min=1), default=4, show_default=True, help="steps that run at the same time"
)
@click.option(
    "-p", "--parameter", "parameters", multiple=True, metavar="NAME=VALUE", help="a notebook's or KFP pipeline's input"
)
@click.option(
    "--volume",
    "volumes",
    multiple=True,
    metavar="NAME=DIR",
    help="a notebook volume's directory on this machine, or a KFP pipeline's PVC (the first keeps its outputs)",
)
@click.option("--python", help="the Python that runs a notebook's steps (it needs cloudpickle); default: rok's own")
@click.option(
    "--keep",
    is_flag=True,
    help="keep the run's clone of the notebook's volumes (by default removed once the run's versions hold it)",
)
def run(
    pipeline_file: Path,
    timeout: float,
    parallelism: int,
    parameters: tuple[str, ...],
    volumes: tuple[str, ...],
    python: str | None,
    keep: bool,
) -> None:
    """Run PIPELINE_FILE (docs/pipelines.md), a pipeline compiled by the KFP SDK, or a Kale-tagged NOTEBOOK.ipynb
    (docs/notebooks.md): snapshot and clone the notebook's volumes, then the steps."""
    import asyncio
    import contextlib

    from rokcommon.connection import connect as connect_or_fail
    from rokcommon.logs import setup_logging
    from rokcommon.permissions import RUNNER
    from rokcommon.settings import load as load_settings
    from rokcommon.telemetry import setup_telemetry

    from rok_pipeline_watcher.runner.engine import Runner, StepLauncher
    from rok_pipeline_watcher.runner.nats_bus import NatsBus
    from rok_pipeline_watcher.runner.pipeline import check_roots, load
    from rok_pipeline_watcher.runner.progress import follow_progress
    from rok_pipeline_watcher.settings import LocalRunSettings

    settings = load_settings(LocalRunSettings)
    setup_logging("run", level="WARNING", fmt="text")
    # The producer of the run's events: each step event's trace starts at its publish here (OTEL_* variables).
    telemetry = setup_telemetry("run")
    launcher: StepLauncher | None = None
    prepared: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if pipeline_file.suffix == ".ipynb":
        from rok_pipeline_watcher.notebook.local import notebook_run

        pipeline, launcher = notebook_run(pipeline_file, parameters, volumes, python)
    elif python:
        raise click.UsageError("--python is for notebooks (NOTEBOOK.ipynb)")
    else:
        from rok_pipeline_watcher.kfp.local import load_any, mount_points

        pipeline = load_any(pipeline_file, volumes=volumes, parameters=parameters, loader=load)
        prepared = mount_points(pipeline_file)  # a KFP task's mount paths that rok creates, for the run only
    check_roots(pipeline, settings.local_volume_roots, pipeline_file)

    async def main() -> None:
        # the run's own connection retries for ever (right once it runs); without a bus, say so now (exit 75)
        await (await connect_or_fail(settings, name="rok-run", local_user=RUNNER)).close()
        async with NatsBus(settings) as bus:
            runner = Runner(
                pipeline,
                bus,
                runs_dir=settings.state_dir / "runs",
                namespace=settings.namespace,
                node=settings.node_name,
                commit_timeout=timeout,
                restore_timeout=timeout,
                report=lambda line: click.echo(line, err=True),
                launcher=launcher,
                parallelism=parallelism,
                remove_clone=not keep,
            )
            try:
                async with follow_progress(
                    settings, runner.workflow.uid, report=lambda line: click.echo(line, err=True)
                ):
                    await runner.run()
            finally:
                versions = runner.result.versions
                if versions:
                    click.echo(f"run {runner.result.run_id}, its versions:")
                    for what, url in versions.items():
                        click.echo(f"  {what:<24} {url}")
                if runner.result.metrics:
                    click.echo("its metrics:")
                    for name, value in sorted(runner.result.metrics.items()):
                        click.echo(f"  {name:<24} {value:g}")

    # a failed step is a RokError: the rok CLI prints it as one line naming the step, and exits non-zero
    try:
        with prepared:
            asyncio.run(main())
    finally:
        telemetry.tracer_provider.force_flush()
