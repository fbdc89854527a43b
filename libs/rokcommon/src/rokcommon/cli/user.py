"""The everyday commands: ``rok ls``, ``rok show``, ``rok restore``, ``rok diff`` — over the bus and the registry.

Each prints a table on a terminal and one JSON document with ``--json``. Exit codes:
0 done; 1 the operation failed (a restore failed, …); 2 a usage error (a malformed URL, a bad option);
4 not found, or it belongs to another namespace; 75 the bus or the registry did not answer (try again).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from nats.aio.client import Client

from rokcommon import streams
from rokcommon.cli.connection import connect
from rokcommon.cli.diffs import VolumeChanges, diff_members
from rokcommon.cli.restores import RestoreWatch, request_restore
from rokcommon.errors import Forbidden, NotFound, PermanentError, TemporaryError
from rokcommon.registry_client import InvalidUrl, RegistryClient, Version, parse_url
from rokcommon.settings import RokSettings

T = TypeVar("T")

EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_TEMPORARY = 1, 2, 4, 75


class RestoreFailed(PermanentError):
    """The restorer reported that the restore failed; the message is its reason."""


def _exit_codes(command: Callable[..., None]) -> Callable[..., None]:
    """Give the failures of a command their exit code; ``rok``'s ``main`` prints the one line."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except InvalidUrl as error:
            raise click.BadParameter(str(error)) from None
        except (NotFound, Forbidden) as error:
            error.exit_code = EXIT_NOT_FOUND
            raise
        except TemporaryError as error:
            error.exit_code = EXIT_TEMPORARY
            raise

    return wrapper


def _url(value: str) -> str:
    parse_url(value)
    return value


@asynccontextmanager
async def _registry(settings: RokSettings) -> Any:
    nc = await connect(settings, name="rok-cli")
    try:
        yield nc, RegistryClient(nc, settings.namespace)
    finally:
        await nc.close()


def _run(make: Callable[[Client, RegistryClient], Awaitable[T]]) -> T:
    settings = RokSettings()

    async def main() -> T:
        async with _registry(settings) as (nc, registry):
            return await make(nc, registry)

    return asyncio.run(main())


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str))


def size(n: int | None) -> str:
    """``1536`` → ``1.5 KiB``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _step(version: Version) -> str:
    if version.step_name is None:
        return "(initial)"
    return version.step_name + (f" #{version.attempt}" if version.attempt else "")


def _file_row(f: Any) -> list[str]:
    return [
        f.name,
        f.pipeline_name or "-",
        f.run_name or f.run_id,
        f.status,
        _when(f.started_at),
        str(f.versions),
        f.url,
    ]


def console() -> Any:
    """A rich console whose tables take their natural width: a long line wraps on the terminal, but no URL
    is ever cut or folded inside a cell, so it can always be copied whole."""
    from rich.console import Console

    return Console(width=100_000, soft_wrap=True)


def _print_table(title: str | None, columns: list[str], rows: Iterable[list[str]]) -> None:
    from rich.table import Table

    table = Table(title=title, box=None, header_style="bold", title_justify="left")
    for column in columns:
        # A URL is never folded: it must stay one piece to be copied.
        table.add_column(column, no_wrap=column == "url", overflow="ignore" if column == "url" else "fold")
    for row in rows:
        table.add_row(*row)
    console().print(table)


# --- rok ls ------------------------------------------------------------------------------------------------


@click.command()
@click.argument("bucket", required=False)
@click.argument("file", required=False)
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@_exit_codes
def ls(bucket: str | None, file: str | None, as_json: bool) -> None:
    """List buckets; the runs (files) of BUCKET; or the versions of FILE, each with its URL.

    BUCKET may also be a rok:// URL of a bucket or a file.
    """
    if bucket and bucket.startswith("rok://"):
        url = parse_url(bucket)
        bucket, file = url.bucket, url.file or file

    async def query(nc: Client, registry: RegistryClient) -> list[Any]:
        if bucket is None:
            return await registry.list_buckets()
        if file is None:
            return await registry.list_files(bucket)
        return await registry.list_versions(bucket, file)

    items = _run(query)
    if as_json:
        _echo_json([item.model_dump(mode="json") for item in items])
        return
    if bucket is None:
        _print_table(
            None,
            ["bucket", "experiment", "runs", "created", "url"],
            [[b.name, b.experiment or "-", str(b.files), _when(b.created_at), b.url] for b in items],
        )
    elif file is None:
        _print_table(
            f"bucket {bucket}",
            ["file", "pipeline", "run", "status", "started", "versions", "url"],
            [_file_row(f) for f in items],
        )
    else:
        _print_table(
            f"{bucket}/{file}",
            ["version", "step", "phase", "tags", "status", "size", "new", "url"],
            [
                [v.id, _step(v), v.phase, ",".join(v.tags) or "-", v.status, size(v.size), size(v.bytes_new), v.url]
                for v in items
            ],
        )
    if not items:
        click.echo("(none)", err=True)


# --- rok show ----------------------------------------------------------------------------------------------


@click.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@_exit_codes
def show(url: str, as_json: bool) -> None:
    """Show a version: its run, step, phase, tags, and every volume with its snapshot and size."""
    _url(url)
    resolved = _run(lambda nc, registry: registry.resolve(url))
    if as_json:
        _echo_json(resolved.model_dump(mode="json"))
        return
    v = resolved.version
    fields = [
        ("url", v.url),
        ("bucket", v.bucket),
        ("file", v.file),
        ("run", v.run_id),
        ("step", _step(v)),
        ("phase", v.phase),
        ("tags", ", ".join(v.tags) or "-"),
        ("status", v.status + (" (best effort)" if v.best_effort else "")),
        ("taken", _when(v.taken_at)),
        ("size", size(v.size)),
        ("new bytes", size(v.bytes_new)),
    ]
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key:<{width}}  {value}")
    _print_table(
        None,
        ["volume", "role", "snapshot", "files", "size", "new", "url"],
        [
            [m.volume, m.role, m.snapshot_id[:12], str(m.files), size(m.size), size(m.bytes_new), m.url]
            for m in resolved.members
        ],
    )
    for failed in v.failed:
        click.echo(f"volume {failed.volume} failed: {failed.reason}", err=True)


# --- rok restore -------------------------------------------------------------------------------------------


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
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@_exit_codes
def restore(url: str, target: Path, volumes: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Restore a version (or one volume of it) into a directory, verified, and wait until it is done."""
    _url(url)
    target = target.expanduser().absolute()
    bar = _RestoreBar(enabled=not as_json)

    async def go(nc: Client, registry: RegistryClient) -> RestoreWatch:
        await streams.ensure_streams(nc.jetstream())
        settings = RokSettings()
        watch = await request_restore(
            nc,
            namespace=settings.namespace,
            url=url,
            target_dir=str(target),
            volumes=volumes,
            requested_by="rok-cli",
            on_update=bar.update,
        )
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

    with bar:
        watch = _run(go)
    if watch.state == "failed":
        raise RestoreFailed(f"restore of {url} failed: {watch.reason}")
    if as_json:
        _echo_json(watch.to_dict())
        return
    result = watch.to_dict()
    click.echo(f"restored {url} into {target} in {result.get('seconds', 0):.1f}s")
    _print_table(
        None,
        ["volume", "location", "files", "size"],
        [[v["name"], v["location"], str(v["files"]), size(v["bytes"])] for v in result.get("volumes", [])],
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


# --- rok diff ----------------------------------------------------------------------------------------------


@click.command()
@click.argument("url_a")
@click.argument("url_b")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@_exit_codes
def diff(url_a: str, url_b: str, as_json: bool) -> None:
    """What changed from version URL_A to version URL_B: paths added (+), removed (-) and changed (~), per volume.

    Give a step's before- and after-version to see what that step changed.
    """
    _url(url_a)
    _url(url_b)

    async def go(nc: Client, registry: RegistryClient) -> list[VolumeChanges]:
        a, b = await asyncio.gather(registry.resolve(url_a), registry.resolve(url_b))
        return await diff_members(a.members, b.members)

    changes = _run(go)
    if as_json:
        _echo_json({"a": url_a, "b": url_b, "volumes": [c.to_dict() for c in changes]})
        return
    rows: list[list[str]] = []
    for c in changes:
        if c.a is None:
            rows.append(["+", c.volume, "(the whole volume is new)"])
        elif c.b is None:
            rows.append(["-", c.volume, "(the whole volume is gone)"])
        rows += [["+", c.volume, p] for p in c.added]
        rows += [["-", c.volume, p] for p in c.removed]
        rows += [["~", c.volume, p] for p in c.changed]
    if rows:
        _print_table(None, ["", "volume", "path"], rows)
    total = sum(c.count for c in changes)
    click.echo(f"{total} path(s) changed in {sum(1 for c in changes if not c.unchanged)} of {len(changes)} volume(s)")
