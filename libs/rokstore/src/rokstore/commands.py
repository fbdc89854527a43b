"""``rok repo …`` and ``rok snapshot …``: the store engine on the command line.

With ``--json`` (or without a terminal) only the result is printed; on a terminal long operations show a
progress bar. Failures raise :class:`rokcommon.errors.RokError`, which ``rok``'s ``main`` prints as one line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _emit(obj: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(obj.to_dict() if hasattr(obj, "to_dict") else obj, separators=(",", ":")))
    else:
        human(obj)


class _Bar:
    """A rich progress bar on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.label = label
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Bar:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None)
        return self

    def __call__(self, p: Any) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=p.bytes_done, total=p.bytes_total or None, description=f"{self.label} {p.phase}"
            )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _tags(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"tag {value!r} is not KEY=VALUE", param_hint="--tag")
        out[key] = val
    return out


# ROK_REPOSITORY is the services' store URL too, so `rok snapshot ls` on their machine needs no --repo (restic's habit).
repo_option = click.option(
    "--repo",
    "url",
    required=True,
    envvar="ROK_REPOSITORY",
    show_envvar=True,
    metavar="URL",
    help="file:///path or s3://bucket/prefix",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on one line.")


@click.group()
def repo() -> None:
    """Create, check and clean repositories."""


@repo.command("init")
@repo_option
@json_option
def repo_init(url: str, as_json: bool) -> None:
    """Create an empty repository at URL."""
    from rokstore import init_repository

    async def go() -> dict[str, str]:
        r = await init_repository(url)
        await r.close()
        return {"url": url, "id": r.id}

    result = _run(go())
    _emit(result, as_json, lambda r: click.echo(f"created repository {r['id']} at {url}"))


@repo.command("check")
@repo_option
@click.option("--read-data", is_flag=True, help="Read and verify every byte, not only the structure.")
@json_option
def repo_check(url: str, read_data: bool, as_json: bool) -> None:
    """Verify that every snapshot can be restored."""
    from rokstore import check, open_repository

    async def go() -> Any:
        async with await open_repository(url) as r:
            return await check(r, read_data=read_data)

    report = _run(go())

    def human(rep: Any) -> None:
        for p in rep.problems:
            names = ", ".join(s[:12] for s in p.snapshots) or "none"
            click.echo(f"problem: {p.kind}: {p.message} (snapshots affected: {names})")
        for note in rep.notes:
            click.echo(f"note: {note}")
        click.echo(f"{'ok' if rep.ok else 'FAILED'}: {rep.snapshots} snapshots, {rep.packs} packs, {rep.chunks} chunks")

    _emit(report, as_json, human)
    if not report.ok:
        sys.exit(1)


@repo.command("gc")
@repo_option
@click.option("--dry-run", is_flag=True, help="Report what would be removed, remove nothing.")
@click.option(
    "--registry",
    "ask_registry",
    is_flag=True,
    help="Ask rok's registry (over the bus, as the operator) which snapshots it still records: remove those it "
    "forgot (rok forget), and those it never recorded once older than --orphan-grace.",
)
@click.option(
    "--orphan-grace",
    default="24h",
    show_default=True,
    envvar="ROK_GC_ORPHAN_GRACE",
    show_envvar=True,
    metavar="DURATION",
    help="With --registry: how old a snapshot nobody recorded must be to go (s, m, h, d: 90m, 24h, 7d).",
)
@json_option
def repo_gc(url: str, dry_run: bool, ask_registry: bool, orphan_grace: str, as_json: bool) -> None:
    """Remove data that no snapshot references (with --registry, also the snapshots nothing records)."""
    from rokstore import collect_garbage, open_repository

    grace = _seconds(orphan_grace, "--orphan-grace")

    async def go() -> Any:
        async with await open_repository(url) as r:
            if not ask_registry:
                return await collect_garbage(r, dry_run=dry_run)
            async with _catalog("registry")() as catalog:
                return await collect_garbage(r, dry_run=dry_run, catalog=catalog, orphan_grace=grace)

    report = _run(go())

    def human(g: Any) -> None:
        if ask_registry:
            verb = "would remove" if g.dry_run else "removed"
            click.echo(
                f"{verb} {g.snapshots_forgotten} forgotten and {g.orphans_removed} orphaned snapshots "
                f"({g.orphans_kept} unrecorded ones are younger than {orphan_grace} and stay); {g.snapshots} remain"
            )
        click.echo(
            f"{'would free' if g.dry_run else 'freed'} {g.bytes_freed} bytes: {g.packs_deleted} packs deleted, "
            f"{g.packs_repacked} repacked, {g.chunks_deleted} chunks dropped"
        )

    _emit(report, as_json, human)


def _catalog(name: str) -> Any:
    """The snapshot catalog called ``name``: a package's ``rok.snapshot_catalogs`` entry point (rok's CLI gives
    ``registry``), which returns an async context manager yielding a :class:`rokstore.gc.SnapshotCatalog`."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="rok.snapshot_catalogs", name=name):
        return ep.load()
    raise click.UsageError(f"--{name} needs rok's CLI (the rokcli package) installed: it asks the {name} on the bus")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str, option: str) -> float:
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _UNITS else "s"
    number = value[:-1] if value[-1:] in _UNITS else value
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise click.BadParameter(f"{text!r} is not a duration: a number and s, m, h or d (24h, 7d)", param_hint=option)
    return seconds


@repo.command("repair-index")
@repo_option
@click.option("--read-all-packs", is_flag=True, help="Read every pack's header, not only those the index misses.")
@json_option
def repo_repair_index(url: str, read_all_packs: bool, as_json: bool) -> None:
    """Rebuild the index from the packs (drops entries of missing packs, replaces damaged index files)."""
    from rokstore import open_repository, repair_index

    async def go() -> Any:
        async with await open_repository(url) as r:
            return await repair_index(r, read_all_packs=read_all_packs)

    report = _run(go())

    def human(rep: Any) -> None:
        for warning in rep.warnings:
            click.echo(f"warning: {warning}", err=True)
        click.echo(
            f"index rebuilt: {rep.chunks} chunks in {rep.packs} packs ({rep.packs_read} read), "
            f"{rep.entries_dropped} entries of missing packs dropped, {rep.index_files_removed} index files replaced"
        )

    _emit(report, as_json, human)


@repo.command("locks")
@repo_option
@json_option
def repo_locks(url: str, as_json: bool) -> None:
    """List the repository's locks: who holds them, and which are stale."""
    from rokstore import list_locks, open_repository

    async def go() -> Any:
        async with await open_repository(url) as r:
            return await list_locks(r.backend)

    locks = _run(go())
    if as_json:
        click.echo(json.dumps([lock.to_dict() for lock in locks], separators=(",", ":")))
        return
    for lock in locks:
        state = f"stale: {lock.stale}" if lock.stale else "held"
        click.echo(f"{lock.key}  {lock.kind}  {lock.host}  pid {lock.pid}  {lock.age:.0f}s ago  {state}")
    if not locks:
        click.echo("no locks")


@repo.command("unlock")
@repo_option
@click.option("--remove-all", is_flag=True, help="Remove every lock, also those still held: only when nothing runs.")
@json_option
def repo_unlock(url: str, remove_all: bool, as_json: bool) -> None:
    """Remove stale locks (left by processes that died), or every lock with --remove-all."""
    from rokstore import open_repository, remove_locks

    async def go() -> Any:
        async with await open_repository(url) as r:
            return await remove_locks(r.backend, remove_all=remove_all)

    removed = _run(go())
    if as_json:
        click.echo(json.dumps([lock.to_dict() for lock in removed], separators=(",", ":")))
        return
    for lock in removed:
        click.echo(f"removed {lock.key} ({lock.stale or 'held'})")
    click.echo(f"{len(removed)} locks removed")


@click.group()
def snapshot() -> None:
    """Take, list, compare and restore snapshots."""


@snapshot.command("create")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@repo_option
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Attach a tag (repeatable).")
@click.option("--cache-key", default=None, help="Identity of the volume for the local cache (default: its path).")
@json_option
def snapshot_create(path: Path, url: str, tags: tuple[str, ...], cache_key: str | None, as_json: bool) -> None:
    """Snapshot the directory PATH into the repository."""
    from rokstore import open_repository
    from rokstore import snapshot as take_snapshot

    parsed = _tags(tags)

    async def go() -> Any:
        async with await open_repository(url) as r:
            with _Bar(not as_json, "snapshot") as bar:
                return await take_snapshot(r, path, tags=parsed, cache_key=cache_key, progress=bar)

    stats = _run(go())

    def human(s: Any) -> None:
        click.echo(
            f"snapshot {s.snapshot_id} saved: {s.files} files, {s.dirs} dirs, {s.bytes_scanned} bytes, "
            f"{s.bytes_new} new, {s.bytes_uploaded} uploaded in {s.seconds:.2f}s"
        )
        for error in s.errors:
            click.echo(f"warning: could not read {error}", err=True)
        for warning in s.warnings:
            click.echo(f"warning: {warning}", err=True)

    _emit(stats, as_json, human)


@snapshot.command("ls")
@repo_option
@json_option
def snapshot_ls(url: str, as_json: bool) -> None:
    """List the snapshots of the repository."""
    from rokstore import open_repository

    async def go() -> Any:
        async with await open_repository(url) as r:
            return await r.scan_snapshots()

    infos, skipped = _run(go())
    for line in skipped:
        click.echo(f"warning: {line}", err=True)
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], separators=(",", ":")))
        return
    for i in infos:
        tags = ",".join(f"{k}={v}" for k, v in sorted(i.tags.items()))
        mark = " (incomplete)" if i.incomplete else ""
        click.echo(
            f"{i.id[:16]}  {i.time[:19]}  {i.hostname}  {i.path}  {i.files} files  {i.bytes} bytes  {tags}{mark}"
        )


@snapshot.command("restore")
@click.argument("snapshot_id")
@repo_option
@click.option("--to", "target", required=True, type=click.Path(path_type=Path), help="An empty or new directory.")
@click.option("--devices", is_flag=True, help="Create the snapshot's device files (as root); skipped otherwise.")
@click.option("--keep-setuid", is_flag=True, help="Keep set-uid and set-gid bits of files; cleared otherwise.")
@click.option("--verify", is_flag=True, help="Read every file back and check it again before putting it in place.")
@json_option
def snapshot_restore(
    snapshot_id: str, url: str, target: Path, devices: bool, keep_setuid: bool, verify: bool, as_json: bool
) -> None:
    """Restore SNAPSHOT_ID into the directory given by --to."""
    from rokstore import open_repository, restore

    async def go() -> Any:
        async with await open_repository(url) as r:
            with _Bar(not as_json, "restore") as bar:
                return await restore(
                    r, snapshot_id, target, progress=bar, devices=devices, keep_setuid=keep_setuid, verify=verify
                )

    stats = _run(go())
    if as_json:
        click.echo(
            json.dumps(
                {
                    "files": stats.files,
                    "bytes": stats.bytes,
                    "seconds": stats.seconds,
                    "snapshot_id": stats.snapshot_id,
                    "warnings": stats.warnings,
                },
                separators=(",", ":"),
            )
        )
    else:
        click.echo(
            f"restored {stats.snapshot_id[:16]}: {stats.files} files, {stats.bytes} bytes in {stats.seconds:.2f}s"
        )
        for warning in stats.warnings:
            click.echo(f"warning: {warning}", err=True)


@snapshot.command("diff")
@click.argument("snapshot_a")
@click.argument("snapshot_b")
@repo_option
@json_option
def snapshot_diff(snapshot_a: str, snapshot_b: str, url: str, as_json: bool) -> None:
    """List the paths added, removed and changed from SNAPSHOT_A to SNAPSHOT_B."""
    from rokstore import diff, open_repository

    async def go() -> Any:
        async with await open_repository(url) as r:
            return await diff(r, snapshot_a, snapshot_b)

    d = _run(go())

    def human(diff: Any) -> None:
        for p in diff.added:
            click.echo(f"+ {p}")
        for p in diff.removed:
            click.echo(f"- {p}")
        for p in diff.changed:
            click.echo(f"M {p}")

    _emit(d, as_json, human)
