"""``rok forget``, ``rok pin URL``, ``rok unpin URL``: what the registry keeps; and the registry as the snapshot
catalog of ``rok repo gc --registry``.

A forget removes runs and versions from the registry, recorded with its rules and who asked; their snapshots
stay in the store until ``rok repo gc --registry`` (run where the store's credentials are) removes them and
reclaims their space. Exit codes as every command's: 0 done, 2 a usage error, 4 not found or another
namespace's, 75 the bus or the registry did not answer.
"""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import click
from nats.aio.client import Client
from rokcommon.connection import connect
from rokcommon.durations import parse_duration
from rokcommon.errors import InvalidRequest
from rokcommon.humanize import size
from rokcommon.permissions import OPERATOR
from rokcommon.registry_client import RegistryClient
from rokcommon.registry_contract import ForgetReport, KeepRules, Pinned
from rokcommon.retention import RetentionClient, recorded_snapshots
from rokcommon.settings import RokSettings
from rokcommon.urls import parse_url

from rokcli.tables import echo_json, print_table
from rokcli.user import check_url, exit_codes, run

TAGS = ("initial", "final", "failed")


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "rok-cli"


def _client(nc: Client, registry: RegistryClient) -> RetentionClient:
    return RetentionClient(nc, registry.namespace, requested_by=_who())


@click.command()
@click.argument("bucket", required=False)
@click.option("--keep-last", type=click.IntRange(min=1), help="keep the N newest runs of each bucket")
@click.option(
    "--keep-within", metavar="DURATION", help="keep the runs started within DURATION of the newest (30d, 1y2m)"
)
@click.option(
    "--keep-tag",
    "keep_tags",
    multiple=True,
    type=click.Choice(TAGS),
    help="of the other runs keep the versions with this tag (repeatable; default: final and failed)",
)
@click.option("--no-keep-tags", is_flag=True, help="keep no version for its tags (pins still keep)")
@click.option("--dry-run", is_flag=True, help="show what would be forgotten, forget nothing")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@exit_codes
def forget(
    bucket: str | None,
    keep_last: int | None,
    keep_within: str | None,
    keep_tags: tuple[str, ...],
    no_keep_tags: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Forget old runs and versions of BUCKET (a name or rok:// URL; default: every bucket), by rules like restic's.

    Whatever any rule keeps stays: the --keep-last newest runs, the runs within --keep-within of the newest,
    pinned runs and versions (rok pin), runs still running, and of the other runs the versions tagged
    --keep-tag. Then `rok repo gc --registry` removes the forgotten snapshots from the store.
    """
    if not keep_last and not keep_within:
        raise click.UsageError("give --keep-last N or --keep-within DURATION (or both): what should be kept?")
    if no_keep_tags and keep_tags:
        raise click.UsageError("--no-keep-tags and --keep-tag contradict each other: give one")
    if bucket and bucket.startswith("rok://"):
        url = parse_url(bucket)
        if url.file is not None:
            raise click.BadParameter(f"{bucket} names a run: forget takes a bucket (or none: every bucket)")
        bucket = url.bucket
    tags = () if no_keep_tags else keep_tags or ("final", "failed")
    if keep_within is not None:
        try:
            keep_within = str(parse_duration(keep_within))
        except InvalidRequest as error:
            raise click.BadParameter(str(error), param_hint="--keep-within") from None
    rules = KeepRules.model_validate({"keep_last": keep_last, "keep_within": keep_within, "keep_tags": tags})

    report = run(lambda nc, registry: _client(nc, registry).forget(rules, bucket=bucket, dry_run=dry_run))
    if as_json:
        echo_json(report.model_dump(mode="json"))
        return
    _print_report(report)


def _print_report(report: ForgetReport) -> None:
    if report.runs:
        print_table(
            f"{'would forget' if report.dry_run else 'forgot'} ({report.rules})",
            ["bucket", "file", "versions", "kept", "url"],
            [
                [
                    r.bucket,
                    r.file,
                    str(r.versions_forgotten),
                    "(run goes)" if r.whole else str(r.versions_kept),
                    r.url,
                ]
                for r in report.runs
            ],
        )
    if report.runs_listed < report.runs_forgotten:
        click.echo(f"… and {report.runs_forgotten - report.runs_listed} more runs (--json lists the same)", err=True)
    verb = "would forget" if report.dry_run else "forgot"
    click.echo(
        f"{verb} {report.versions_forgotten} versions of {report.runs_forgotten} runs "
        f"({report.runs_removed} whole), {report.snapshots_forgotten} snapshots holding {size(report.bytes_forgotten)}"
    )
    if not report.dry_run and report.snapshots_forgotten:
        click.echo("their space is reclaimed by `rok repo gc --registry` where the store is", err=True)


@click.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@exit_codes
def pin(url: str, as_json: bool) -> None:
    """Pin a bucket, run or version (its rok:// URL): no forget removes it, nor anything in it."""
    _pin(url, True, as_json)


@click.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@exit_codes
def unpin(url: str, as_json: bool) -> None:
    """Unpin a bucket, run or version: forgets judge it by their rules again."""
    _pin(url, False, as_json)


def _pin(url: str, pinned: bool, as_json: bool) -> None:
    check_url(url)
    result: Pinned = run(lambda nc, registry: _client(nc, registry).pin(url, pinned=pinned))
    if as_json:
        echo_json(result.model_dump(mode="json"))
    else:
        click.echo(f"{'pinned' if result.pinned else 'unpinned'} {result.kind} {result.url}")


# --- the registry as the catalog of `rok repo gc --registry` ------------------------------------------------


class RegistryCatalog:
    """Which snapshots the registry records (a :class:`rokstore.gc.SnapshotCatalog`), asked over the bus."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc

    async def known(self, ids: Sequence[str]) -> tuple[set[str], set[str]]:
        return await recorded_snapshots(self.nc, ids)


@asynccontextmanager
async def registry_catalog() -> AsyncIterator[RegistryCatalog]:
    """The ``registry`` entry point of ``rok.snapshot_catalogs``: connected as the operator NATS user
    (``ROK_NATS_USER``/``ROK_NATS_PASSWORD``, or the local one ``rok up`` made)."""
    nc = await connect(RokSettings(), name="rok-gc", local_user=OPERATOR)
    try:
        yield RegistryCatalog(nc)
    finally:
        await nc.close()
