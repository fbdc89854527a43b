"""``rok restore URL --to DIR | --pvc NAME | --notebook NAME``: ask for a restore, show its progress, wait for the
outcome — over the bus on one machine, through the registry's HTTP API (:mod:`rokcommon.registry_http`) in a cluster."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from nats.aio.client import Client
from opentelemetry import trace
from pydantic import ValidationError
from rokcommon import streams
from rokcommon.errors import NotFound, PermanentError, TemporaryError
from rokcommon.events import DirectoryTarget, NotebookTarget, PvcTarget, RestoreTarget
from rokcommon.humanize import size as size_of
from rokcommon.registry_client import RegistryClient
from rokcommon.registry_contract import Resolved
from rokcommon.registry_http import Remote
from rokcommon.restores import RestoreWatch, request_restore
from rokcommon.settings import RokSettings
from rokcommon.telemetry import setup_telemetry
from rokcommon.urls import parse_url

from rokcli.tables import echo_json, print_table
from rokcli.user import check_url, exit_codes, run


class RestoreFailed(PermanentError):
    """The restorer reported that the restore failed; the message is its reason."""


@click.command()
@click.argument("url")
@click.option(
    "--to",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="an empty (or new) directory: one volume goes into it, several into one sub-directory each (one machine)",
)
@click.option("--pvc", metavar="NAME", help="a new PVC of this name, holding the one volume restored")
@click.option("--notebook", metavar="NAME", help="a new notebook server of this name, one new PVC per volume")
@click.option("--namespace", metavar="NS", help="namespace of the new PVC or notebook server; default: the version's")
@click.option("--size", metavar="SIZE", help="the new PVC's size (10Gi); default: the original's, never below the data")
@click.option(
    "--volume-size",
    "volume_sizes",
    multiple=True,
    metavar="VOLUME=SIZE",
    help="a notebook server's new PVC size for one volume (repeatable)",
)
@click.option("--storage-class", metavar="CLASS", help="storage class of the new PVCs; default: the original's")
@click.option(
    "--access-mode",
    type=click.Choice(["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]),
    help="the new PVC's access mode; default: the original's",
)
@click.option("--image", help="the new notebook server's image; default: the image of the notebook the run came from")
@click.option("--volume", "volumes", multiple=True, help="restore only this volume (repeatable); default: all")
@click.option("--timeout", default=3600.0, show_default=True, help="seconds to wait for the restore to finish")
@click.option("--devices", is_flag=True, help="create the snapshot's device files (the restorer runs as root)")
@click.option("--keep-setuid", is_flag=True, help="keep set-uid and set-gid bits of files (cleared otherwise)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@exit_codes
def restore(
    url: str,
    directory: Path | None,
    pvc: str | None,
    notebook: str | None,
    namespace: str | None,
    size: str | None,
    volume_sizes: tuple[str, ...],
    storage_class: str | None,
    access_mode: str | None,
    image: str | None,
    volumes: tuple[str, ...],
    timeout: float,
    devices: bool,
    keep_setuid: bool,
    as_json: bool,
) -> None:
    """Restore a version (or one volume of it) into a directory, a new PVC or a new notebook server, verified,
    and wait until it is done.

    \b
    rok restore URL --to ./restored
    rok restore URL --pvc my-data [--namespace NS] [--size 20Gi]
    rok restore URL --notebook my-notebook [--image IMAGE] [--volume-size data=50Gi]

    With ROK_REGISTRY_URL set (in a cluster: the registry behind Kubeflow's gateway) the request goes through
    the registry's HTTP API with your identity (ROK_TOKEN, else this pod's service account token); otherwise
    over the bus, as on one machine.
    """
    check_url(url)
    request = restore_request(
        url,
        directory=directory,
        pvc=pvc,
        notebook=notebook,
        namespace=namespace,
        size=size,
        volume_sizes=volume_sizes,
        storage_class=storage_class,
        access_mode=access_mode,
        image=image,
        volumes=volumes,
    )
    if (devices or keep_setuid) and request.kind != "directory":
        raise click.UsageError("--devices and --keep-setuid apply to a directory (--to) only")
    remote = Remote.from_environment()
    if remote is not None:
        result = remote.restore(request, timeout, on_update=None if as_json else _said)
    else:
        result = _over_the_bus(request, timeout, devices, keep_setuid, as_json)
    if result["state"] == "failed":
        raise RestoreFailed(f"restore of {url} failed: {result.get('reason')}")
    if as_json:
        echo_json(result)
        return
    click.echo(f"restored {url} into {result['target']} in {result.get('seconds', 0):.1f}s")
    print_table(
        None,
        ["volume", "location", "files", "size"],
        [[v["name"], v["location"], str(v["files"]), size_of(v["bytes"])] for v in result.get("volumes", [])],
    )


def restore_request(
    url: str,
    *,
    directory: Path | None = None,
    pvc: str | None = None,
    notebook: str | None = None,
    namespace: str | None = None,
    size: str | None = None,
    volume_sizes: tuple[str, ...] = (),
    storage_class: str | None = None,
    access_mode: str | None = None,
    image: str | None = None,
    volumes: tuple[str, ...] = (),
) -> RestoreAsked:
    """What the options ask for, checked: exactly one target, and only the options that target takes."""
    chosen = [name for name, value in (("--to", directory), ("--pvc", pvc), ("--notebook", notebook)) if value]
    if len(chosen) != 1:
        raise click.UsageError(
            "say where to restore: one of --to DIRECTORY, --pvc NAME or --notebook NAME"
            + (f" (not {' and '.join(chosen)} together)" if chosen else "")
        )
    not_for: dict[str, list[tuple[str, object]]] = {
        "--to": [
            ("--namespace", namespace),
            ("--size", size),
            ("--volume-size", volume_sizes),
            ("--storage-class", storage_class),
            ("--access-mode", access_mode),
            ("--image", image),
        ],
        "--pvc": [("--volume-size", volume_sizes), ("--image", image)],
        "--notebook": [("--size", size), ("--access-mode", access_mode)],
    }
    misplaced = [name for name, value in not_for[chosen[0]] if value]
    if misplaced:
        raise click.UsageError(f"{', '.join(misplaced)} does not apply to {chosen[0]}")
    sizes: dict[str, str] = {}
    for item in volume_sizes:
        volume, _, quantity = item.partition("=")
        if not volume or not quantity:
            raise click.BadParameter(f"{item!r} is not VOLUME=SIZE (such as data=50Gi)", param_hint="--volume-size")
        sizes[volume] = quantity
    if directory is not None:
        return RestoreAsked(url, "directory", str(directory.expanduser().absolute()), volumes=volumes)
    kind = "pvc" if pvc else "notebook"
    return RestoreAsked(
        url,
        kind,
        str(pvc or notebook),
        namespace=namespace,
        volumes=volumes,
        size=size,
        sizes=sizes,
        storage_class=storage_class,
        access_mode=access_mode,
        image=image,
    )


@dataclass(frozen=True)
class RestoreAsked:
    """A restore as the registry's API takes it (``POST /api/v1/restores``)."""

    url: str
    kind: str  # directory | pvc | notebook
    target: str  # the directory, or the new PVC's or notebook server's name
    namespace: str | None = None
    volumes: tuple[str, ...] = ()
    size: str | None = None
    sizes: dict[str, str] = field(default_factory=dict)
    storage_class: str | None = None
    access_mode: str | None = None
    image: str | None = None
    run_id: str | None = None  # a run's clone (rok clone-pvc): the run that owns the new PVC

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url, "kind": self.kind, "target": self.target, "volumes": list(self.volumes)}
        for name in ("namespace", "size", "storage_class", "access_mode", "image", "run_id"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.sizes:
            out["sizes"] = dict(self.sizes)
        return out

    def model(self) -> RestoreTarget:
        """The target as the bus carries it (the namespace defaults to the version's)."""
        if self.kind == "directory":
            return DirectoryTarget(path=self.target)
        namespace = self.namespace or parse_url(self.url).namespace
        try:
            if self.kind == "pvc":
                return PvcTarget(
                    namespace=namespace,
                    name=self.target,
                    size=self.size,
                    storage_class=self.storage_class,
                    access_mode=self.access_mode,
                    run_id=self.run_id,
                )
            return NotebookTarget(
                namespace=namespace,
                name=self.target,
                image=self.image,
                storage_class=self.storage_class,
                sizes=self.sizes,
            )
        except ValidationError as error:
            raise click.BadParameter(error.errors()[0]["msg"].removeprefix("Value error, ")) from None


def _said(state: dict[str, Any]) -> None:
    click.echo(f"restore {state['request_id']}: {state['state']}", err=True)


def _over_the_bus(
    asked: RestoreAsked, timeout: float, devices: bool, keep_setuid: bool, as_json: bool
) -> dict[str, Any]:
    model = asked.model()
    bar = _RestoreBar(enabled=not as_json)

    async def go(nc: Client, registry: RegistryClient) -> RestoreWatch:
        # One trace per restore: the resolve, the request and its outcome under this command's span.
        settings = RokSettings()
        with trace.get_tracer("rokcli").start_as_current_span(
            "rok restore", attributes={"rok.url": asked.url, "rok.namespace": settings.namespace}
        ) as span:
            # An unknown version (or another namespace's) is "not found" (exit 4) before a restorer is asked.
            _check_volumes(asked.url, asked.volumes, await registry.resolve(asked.url))
            await streams.ensure_streams(nc.jetstream())
            watch = await request_restore(
                nc,
                namespace=settings.namespace,
                url=asked.url,
                target=model,
                volumes=asked.volumes,
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
                    f"restore {watch.request_id} of {asked.url} did not finish within {timeout:g}s; "
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
    return watch.to_dict()


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
