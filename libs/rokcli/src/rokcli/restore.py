"""``rok restore URL --to DIR``: ask for a restore on the bus, show its progress, wait for the outcome."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click
from nats.aio.client import Client
from opentelemetry import trace
from rokcommon import streams
from rokcommon.errors import NotFound, PermanentError, TemporaryError
from rokcommon.humanize import size
from rokcommon.registry_client import RegistryClient
from rokcommon.registry_contract import Resolved
from rokcommon.restores import RestoreWatch, request_restore
from rokcommon.settings import RokSettings
from rokcommon.telemetry import setup_telemetry

from rokcli.tables import echo_json, print_table
from rokcli.user import check_url, exit_codes, run


class RestoreFailed(PermanentError):
    """The restorer reported that the restore failed; the message is its reason."""


@click.command()
@click.argument("url")
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="an empty (or new) directory: one volume goes into it, several into one sub-directory each",
)
@click.option("--volume", "volumes", multiple=True, help="restore only this volume (repeatable); default: all")
@click.option("--timeout", default=3600.0, show_default=True, help="seconds to wait for the restore to finish")
@click.option("--devices", is_flag=True, help="create the snapshot's device files (the restorer runs as root)")
@click.option("--keep-setuid", is_flag=True, help="keep set-uid and set-gid bits of files (cleared otherwise)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@exit_codes
def restore(
    url: str, target: Path, volumes: tuple[str, ...], timeout: float, devices: bool, keep_setuid: bool, as_json: bool
) -> None:
    """Restore a version (or one volume of it) into a directory, verified, and wait until it is done."""
    check_url(url)
    target = target.expanduser().absolute()
    bar = _RestoreBar(enabled=not as_json)

    async def go(nc: Client, registry: RegistryClient) -> RestoreWatch:
        # One trace per restore: the resolve, the request and its outcome under this command's span.
        settings = RokSettings()
        with trace.get_tracer("rokcli").start_as_current_span(
            "rok restore", attributes={"rok.url": url, "rok.namespace": settings.namespace}
        ) as span:
            # An unknown version (or another namespace's) is "not found" (exit 4) before a restorer is asked.
            _check_volumes(url, volumes, await registry.resolve(url))
            await streams.ensure_streams(nc.jetstream())
            watch = await request_restore(
                nc,
                namespace=settings.namespace,
                url=url,
                target_dir=str(target),
                volumes=volumes,
                requested_by="rok-cli",
                on_update=bar.update,
                devices=devices,
                keep_setuid=keep_setuid,
            )
            span.set_attribute("rok.restore.request_id", watch.request_id)
            try:
                await _wait(watch, timeout)
            except TimeoutError:
                raise TemporaryError(
                    f"restore {watch.request_id} of {url} did not finish within {timeout:g}s; "
                    "is rok-restorer running (rok status)?"
                ) from None
            finally:
                await watch.close()
            return watch

    telemetry = setup_telemetry("cli")
    try:
        with bar:
            watch = run(go)
    finally:
        telemetry.tracer_provider.force_flush()  # this command's spans leave before it exits
    if watch.state == "failed":
        raise RestoreFailed(f"restore of {url} failed: {watch.reason}")
    if as_json:
        echo_json(watch.to_dict())
        return
    result = watch.to_dict()
    click.echo(f"restored {url} into {target} in {result.get('seconds', 0):.1f}s")
    print_table(
        None,
        ["volume", "location", "files", "size"],
        [[v["name"], v["location"], str(v["files"]), size(v["bytes"])] for v in result.get("volumes", [])],
    )


def _check_volumes(url: str, wanted: tuple[str, ...], resolved: Resolved) -> None:
    held = [m.volume for m in resolved.members]
    unknown = [name for name in wanted if name not in held]
    if unknown:
        raise NotFound(
            f"{url} has no volume {', '.join(unknown)}; it holds {', '.join(held) or 'none'} (--volume NAME)"
        )


QUIET_HINT = 15.0  # seconds without a word from the restorer before we say what may be wrong


async def _wait(watch: RestoreWatch, timeout: float) -> None:
    """Wait for the restore's outcome; if no restorer has answered for a while, say once that it may be down."""
    quiet = min(QUIET_HINT, timeout)
    try:
        await asyncio.wait_for(watch.done.wait(), quiet)
        return
    except TimeoutError:
        if quiet >= timeout:
            raise
    if watch.state == "requested":
        click.echo(
            f"rok: no restorer has taken request {watch.request_id} yet; still waiting (is it running? rok status)",
            err=True,
        )
    await asyncio.wait_for(watch.done.wait(), timeout - quiet)


class _RestoreBar:
    """A rich progress bar on a terminal, fed by the restorer's progress messages."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _RestoreBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("restore requested", total=None)
        return self

    def update(self, watch: RestoreWatch) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=watch.bytes_done,
                total=watch.bytes_total or None,
                description=f"restore {watch.state}",
            )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
