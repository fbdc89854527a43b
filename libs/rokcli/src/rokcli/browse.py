"""``rok cat URL PATH`` and ``rok ls URL --path DIR``: a file or a directory of a version, without restoring it.

The store is read by the restorer, which answers over the bus (:mod:`rokcommon.browse`). Paths are those of
``rok mount``: below a volume URL, the volume's own; below a version URL, one directory per volume; below a run's
URL, one directory per version (:func:`version_names`), then one per volume.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click
from nats.aio.client import Client
from rokcommon.browse import BrowseClient, BrowseEntry, read_size
from rokcommon.errors import NotFound
from rokcommon.humanize import size, when
from rokcommon.registry_client import RegistryClient
from rokcommon.registry_contract import Version
from rokcommon.urls import parse_url

from rokcli.tables import echo_json, print_table
from rokcli.user import check_url, exit_codes, run


@dataclass(frozen=True)
class Place:
    """Where a path of a URL lies: inside the volume ``volume_url`` at ``path``, or, when ``volume_url`` is None,
    in one of the directories rok makes up above volumes, whose entries are ``children`` (name → URL)."""

    volume_url: str | None
    path: str = ""
    children: tuple[tuple[str, str], ...] = ()
    above: str = ""  # the made-up directories on the way (``train-after/workspace``)


def version_names(versions: list[Version]) -> dict[str, str]:
    """A directory name per version of a run, by step and phase (``initial``, ``train-before``,
    ``train-after``, ``train-2-after`` for a retry), → the version's URL; a name taken twice gets ``-<id>``."""
    names: dict[str, str] = {}
    for v in versions:
        if v.step_name is None:
            name = "initial"
        else:
            name = v.step_name + (f"-{v.attempt}" if v.attempt else "") + f"-{v.phase}"
        if name in names:
            name = f"{name}-{v.id}"
        names[name] = v.url
    return names


async def top(registry: RegistryClient, url: str) -> Place:
    """The place of ``url`` itself."""
    parsed = parse_url(url)
    if parsed.volume:
        return Place(url)
    if parsed.version:
        resolved = await registry.resolve(url)
        return Place(None, children=tuple((m.volume, m.url) for m in resolved.members))
    if parsed.file:
        versions = [v async for v in registry.iter_versions(parsed.bucket, parsed.file, order="oldest")]
        return Place(None, children=tuple(version_names(versions).items()))
    raise click.BadParameter(f"{url} is a bucket: give the URL of a run, a version or a volume")


async def locate(registry: RegistryClient, url: str, path: str) -> Place:
    """The place of ``path`` below ``url``."""
    place = await top(registry, url)
    names = [n for n in path.strip("/").split("/") if n]
    above: list[str] = []
    while names and place.volume_url is None:
        name = names.pop(0)
        below = dict(place.children).get(name)
        if below is None:
            held = ", ".join(n for n, _ in place.children) or "nothing"
            raise NotFound(f"no {name!r} below {url}: it holds {held}")
        above.append(name)
        place = await top(registry, below)
    return Place(place.volume_url, "/".join(names), place.children, "/".join(above))


def _mode(entry: BrowseEntry) -> str:
    kinds = {"dir": "d", "symlink": "l", "fifo": "p", "char": "c", "block": "b"}
    bits = "".join(ch if entry.mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    return kinds.get(entry.kind, "-") + bits


@click.command("cat")
@click.argument("url")
@click.argument("path")
@exit_codes
def cat(url: str, path: str) -> None:
    """Print the file PATH of a version (URL: a volume, a version or a run, as `rok mount` shows it) to stdout."""
    check_url(url)

    async def go(nc: Client, registry: RegistryClient) -> None:
        place = await locate(registry, url, path)
        if place.volume_url is None:
            raise click.UsageError(f"{path!r} of {url} is a directory: `rok ls {url} --path {path}` lists it")
        client = BrowseClient(nc, registry.namespace)
        entry = await client.stat(place.volume_url, place.path)
        content = entry.link if entry.kind == "hardlink" and entry.link else place.path
        out = sys.stdout.buffer
        piece = read_size(nc)
        offset = 0
        while offset < entry.size or offset == 0:
            data = await client.read(place.volume_url, content, offset, piece)
            out.write(data)
            offset += len(data)
            if len(data) < piece:
                break
        out.flush()

    run(go)


async def listing(nc: Client, registry: RegistryClient, url: str, path: str) -> list[BrowseEntry]:
    """The entries of the directory ``path`` below ``url`` (the directories rok makes up above volumes too), each
    with its path as ``rok mount`` shows it below ``url``."""
    place = await locate(registry, url, path)

    def shown(inner: str) -> str:
        return "/".join(p for p in (place.above, inner) if p)

    if place.volume_url is None:
        return [BrowseEntry(path=shown(name), kind="dir", mode=0o555) for name, _ in place.children]
    client = BrowseClient(nc, registry.namespace)
    entry = await client.stat(place.volume_url, place.path)
    found = [entry] if entry.kind != "dir" else [e async for e in client.list_all(place.volume_url, place.path)]
    return [e.model_copy(update={"path": shown(e.path)}) for e in found]


def print_listing(url: str, path: str, entries: list[BrowseEntry], as_json: bool) -> None:
    """``rok ls URL --path DIR``: a table like ``ls -l``, or one JSON document."""
    if as_json:
        echo_json({"url": url, "path": path.strip("/"), "entries": [e.model_dump(mode="json") for e in entries]})
        return
    rows = []
    for e in entries:
        name = e.name + ("/" if e.kind == "dir" else "")
        if e.kind == "symlink":
            name += f" -> {e.target}"
        elif e.kind == "hardlink":
            name += f" (hard link to {e.link})"
        mtime = when_ns(e.mtime_ns) if e.mtime_ns else "-"
        rows.append([_mode(e), f"{e.uid}:{e.gid}", size(e.size) if e.kind != "dir" else "-", mtime, name])
    print_table(f"{url} {path.strip('/') or '/'}", ["mode", "owner", "size", "modified", "name"], rows)
    if not entries:
        click.echo("(empty)", err=True)


def when_ns(mtime_ns: int) -> str:
    from datetime import UTC, datetime

    return when(datetime.fromtimestamp(mtime_ns / 1e9, UTC))
