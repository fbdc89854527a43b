"""The everyday commands: ``rok ls``, ``rok show``, ``rok diff`` (and ``rok restore``, in its own module) —
over the bus and the registry.

Each prints a table on a terminal and one JSON document with ``--json``. Exit codes:
0 done; 1 the operation failed (a restore failed, …); 2 a usage error (a malformed URL, a bad option);
4 not found, or it belongs to another namespace; 75 the bus or the registry did not answer (try again).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import click
from nats.aio.client import Client
from rokcommon.connection import connect
from rokcommon.diffs import VolumeChanges, request_diff
from rokcommon.errors import Forbidden, NotFound, TemporaryError
from rokcommon.humanize import size, when
from rokcommon.registry_client import RegistryClient
from rokcommon.registry_contract import DEFAULT_PAGE, MAX_PAGE, Buckets, Files, Order, RunFile, Versions
from rokcommon.settings import RokSettings
from rokcommon.urls import InvalidUrl, parse_url

from rokcli.tables import echo_json, file_row, print_table, step_label

T = TypeVar("T")

EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_TEMPORARY = 1, 2, 4, 75


def exit_codes(command: Callable[..., None]) -> Callable[..., None]:
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


def check_url(value: str) -> str:
    """A malformed URL is a usage error (exit 2) before anything is asked."""
    parse_url(value)
    return value


@asynccontextmanager
async def _registry(settings: RokSettings) -> Any:
    nc = await connect(settings, name="rok-cli")
    try:
        yield nc, RegistryClient(nc, settings.namespace)
    finally:
        await nc.close()


def run(make: Callable[[Client, RegistryClient], Awaitable[T]]) -> T:
    """Connect to NATS (failing fast), run ``make(nc, registry)``, disconnect."""
    settings = RokSettings()

    async def main() -> T:
        async with _registry(settings) as (nc, registry):
            return await make(nc, registry)

    return asyncio.run(main())


# --- rok ls ------------------------------------------------------------------------------------------------


@click.command()
@click.argument("bucket", required=False)
@click.argument("file", required=False)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_PAGE,
    show_default=True,
    help="list at most this many (newest first)",
)
@click.option("--all", "every", is_flag=True, help="list every one, however many (page after page)")
@click.option("--order", type=click.Choice(["newest", "oldest"]), default="newest", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@click.option(
    "--path",
    "inside",
    default=None,
    help="list this directory inside the version (or volume, or run) of the URL, as `rok mount` shows it",
)
@exit_codes
def ls(
    bucket: str | None, file: str | None, limit: int, every: bool, order: Order, as_json: bool, inside: str | None
) -> None:
    """List buckets; the runs (files) of BUCKET; or the versions of FILE, each with its URL.

    BUCKET may also be a rok:// URL of a bucket or a file, or a run's KFP run id (then its versions are listed).
    The first LIMIT are listed, newest first; the rest are counted (--all lists them too). With a version's
    or a volume's URL (or --path), what the version holds is listed instead: --path DIR, its directory DIR.
    """
    if bucket and bucket.startswith("rok://") and (inside is not None or parse_url(bucket).version):
        from rokcli.browse import listing, print_listing

        url, where = bucket, inside or ""
        print_listing(url, where, run(lambda nc, registry: listing(nc, registry, url, where)), as_json)
        return
    if bucket and bucket.startswith("rok://"):
        url = parse_url(bucket)
        bucket, file = url.bucket, url.file or file
    wanted = None if every else limit

    async def query(nc: Client, registry: RegistryClient) -> tuple[list[Any], int]:
        nonlocal bucket, file
        if bucket is None:
            return await first(lambda n, c: registry.buckets_page(limit=n, cursor=c, order=order), wanted)
        if file is None:
            try:
                b = bucket
                return await first(lambda n, c: registry.files_page(b, limit=n, cursor=c, order=order), wanted)
            except NotFound:
                found = await run_by_id(registry, bucket)
                bucket, file = found.bucket, found.name
        b, f = bucket, file
        return await first(lambda n, c: registry.versions_page(b, f, limit=n, cursor=c, order=order), wanted)

    items, total = run(query)
    if as_json:
        echo_json([item.model_dump(mode="json") for item in items])
        return
    if bucket is None:
        print_table(
            None,
            ["bucket", "experiment", "runs", "created", "url"],
            [[b.name, b.experiment or "-", str(b.files), when(b.created_at), b.url] for b in items],
        )
    elif file is None:
        print_table(
            f"bucket {bucket}",
            ["file", "pipeline", "run", "status", "started", "versions", "url"],
            [file_row(f) for f in items],
        )
    else:
        print_table(
            f"{bucket}/{file}",
            ["version", "step", "phase", "tags", "status", "size", "new", "url"],
            [
                [
                    v.id,
                    step_label(v),
                    v.phase,
                    ",".join(v.tags) or "-",
                    v.status,
                    size(v.size),
                    size(v.bytes_new),
                    v.url,
                ]
                for v in items
            ],
        )
    if not items:
        click.echo("(none)", err=True)
    elif total > len(items):
        click.echo(f"… {total - len(items)} more (of {total}); --all lists every one, --limit N the first N", err=True)


async def first(
    page: Callable[[int, str | None], Awaitable[Buckets | Files | Versions]], limit: int | None
) -> tuple[list[Any], int]:
    """The first ``limit`` items of a list (None: every one), page after page, and how many the list holds."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        want = MAX_PAGE if limit is None else min(MAX_PAGE, limit - len(items))
        result = await page(want, cursor)
        items += result.items
        if result.next is None or (limit is not None and len(items) >= limit):
            return items, max(result.total, len(items))
        cursor = result.next


async def run_by_id(registry: RegistryClient, run_id: str) -> RunFile:
    """The run whose KFP run id is ``run_id`` (found through the registry's search), or NotFound."""
    buckets = {hit.bucket for hit in await registry.search(run_id) if hit.kind == "file"}
    for bucket in sorted(buckets):
        async for run_file in registry.iter_files(bucket):
            if run_file.run_id == run_id:
                return run_file
    raise NotFound(
        f"no bucket and no run {run_id!r} in namespace {registry.namespace!r}; "
        "`rok ls` lists the buckets, `rok ls BUCKET` their runs"
    )


# --- rok show ----------------------------------------------------------------------------------------------


@click.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@exit_codes
def show(url: str, as_json: bool) -> None:
    """Show a version: its run, step, phase, tags, and every volume with its snapshot and size."""
    check_url(url)
    resolved = run(lambda nc, registry: registry.resolve(url))
    if as_json:
        echo_json(resolved.model_dump(mode="json"))
        return
    v = resolved.version
    fields = [
        ("url", v.url),
        ("bucket", v.bucket),
        ("file", v.file),
        ("run", v.run_id),
        ("step", step_label(v)),
        ("phase", v.phase),
        ("tags", ", ".join(v.tags) or "-"),
        ("status", v.status + (" (best effort)" if v.best_effort else "")),
        ("pinned", "yes: no forget removes it" if v.pinned else "no"),
        ("taken", when(v.taken_at)),
        ("size", size(v.size)),
        ("new bytes", size(v.bytes_new)),
    ]
    if resolved.metrics:  # the run's, as its steps reported them
        fields.append(("run metrics", ", ".join(f"{k} {val:g}" for k, val in sorted(resolved.metrics.items()))))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key:<{width}}  {value}")
    print_table(
        None,
        ["volume", "role", "snapshot", "files", "size", "new", "url"],
        [
            [m.volume, m.role, m.snapshot_id[:12], str(m.files), size(m.size), size(m.bytes_new), m.url]
            for m in resolved.members
        ],
    )
    for failed in v.failed:
        click.echo(f"volume {failed.volume} failed: {failed.reason}", err=True)


# --- rok diff ----------------------------------------------------------------------------------------------


@click.command()
@click.argument("url_a")
@click.argument("url_b")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@exit_codes
def diff(url_a: str, url_b: str, as_json: bool) -> None:
    """What changed from version URL_A to version URL_B: paths added (+), removed (-) and changed (~), per volume.

    Give a step's before- and after-version to see what that step changed. The store is read by the restorer,
    which answers over the bus.
    """
    check_url(url_a)
    check_url(url_b)

    async def go(nc: Client, registry: RegistryClient) -> list[VolumeChanges]:
        return await request_diff(nc, registry.namespace, url_a, url_b)

    changes = run(go)
    if as_json:
        echo_json({"a": url_a, "b": url_b, "volumes": [c.to_dict() for c in changes]})
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
        print_table(None, ["", "volume", "path"], rows)
    total = sum(c.count for c in changes)
    click.echo(f"{total} path(s) changed in {sum(1 for c in changes if not c.unchanged)} of {len(changes)} volume(s)")
