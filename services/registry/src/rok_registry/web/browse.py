"""The file browser: what a version holds, without restoring it.

``/browse?url=URL&path=DIR`` lists a directory of a version (below a version's URL one directory per volume, below
a volume's the volume itself) with each entry's type, mode, owner, size and mtime, a page of :data:`PAGE` entries at
a time; ``/browse/file?url=URL&path=FILE`` shows a file's metadata and its first :data:`HEAD` bytes as text, or the
file as an image where it is one (PNG, JPEG, GIF, WebP, told by their first bytes); ``/browse/raw`` downloads it
(an attachment, always, but for those images: no file of a volume is ever run as a page of this site);
``/browse/diff?a=URL&b=URL&path=FILE`` shows one file of two versions side by side, a text diff where both are
text.

The registry holds no store: every entry and every byte is asked of the restorer over the bus
(:mod:`rokcommon.browse`), which checks each chunk against its BLAKE3 id and authorises each request again. The
pages first check that the caller may read the URL's namespace (:func:`rok_registry.gate.authorize`) and name
the caller in each request (``requested_by``), as a restore from these pages does.
"""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from rokcommon.authz import READ
from rokcommon.browse import BrowseClient, BrowseEntry, read_size
from rokcommon.errors import InvalidRequest, NotFound, RokError
from rokcommon.urls import parse_url

from rok_registry.answers import refusal
from rok_registry.gate import authorize
from rok_registry.web import _error_page, _page, templates
from rok_registry.web.access import web_bus

PAGE = 100  # entries a directory page shows
HEAD = 64 * 1024  # bytes of a file its page shows
DIFF_BYTES = 1 << 20  # bytes of each side a file diff compares
IMAGES = {  # first bytes → the type an image is served as
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Place:
    """Where ``path`` of ``url`` lies: in the volume ``volume_url`` at ``inner``, or (``volume_url`` None) in
    the version's own directory, whose entries are its volumes (``volumes``: name → volume URL)."""

    url: str
    path: str
    volume_url: str | None
    inner: str = ""
    volumes: tuple[tuple[str, str], ...] = ()


async def _client(request: Request, url: str) -> tuple[BrowseClient, str]:
    """A browse client for ``url``'s namespace, once the caller is allowed to read it; and the namespace."""
    namespace = parse_url(url).namespace
    who = await authorize(request, namespace, READ)
    nc = await web_bus(request).nc()
    return BrowseClient(nc, namespace, requested_by=who.user), namespace


async def _place(request: Request, url: str, path: str) -> Place:
    parsed = parse_url(url)
    if parsed.version is None:
        raise InvalidRequest(f"{url} is not a version: give the URL of a version or of one of its volumes")
    names = [n for n in path.strip("/").split("/") if n]
    if parsed.volume:
        return Place(url, "/".join(names), url, "/".join(names))
    queries = getattr(request.app.state, "queries", None)  # the registry's own query layer, else over NATS
    if queries is not None:
        resolved = await queries.resolve(parsed.namespace, url)
    else:
        resolved = await (await web_bus(request).registry(parsed.namespace)).resolve(url)
    volumes = tuple((m.volume, m.url) for m in resolved.members)
    if not names:
        return Place(url, "", None, volumes=volumes)
    found = dict(volumes).get(names[0])
    if found is None:
        raise NotFound(f"{url} holds no volume {names[0]!r}; it holds {', '.join(dict(volumes)) or 'none yet'}")
    return Place(url, "/".join(names), found, "/".join(names[1:]), volumes)


def link(route: str, **params: Any) -> str:
    return f"/browse{route}?" + urlencode({k: v for k, v in params.items() if v not in (None, "")})


def mode_text(entry: BrowseEntry) -> str:
    kinds = {"dir": "d", "symlink": "l", "fifo": "p", "char": "c", "block": "b"}
    bits = "".join(ch if entry.mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    return kinds.get(entry.kind, "-") + bits


def crumbs(place: Place) -> list[tuple[str, str]]:
    """(name, link) of each directory from the version down to ``place``."""
    out = [("/", link("", url=place.url))]
    names = [n for n in place.path.split("/") if n]
    for i, name in enumerate(names):
        out.append((name, link("", url=place.url, path="/".join(names[: i + 1]))))
    return out


def image_type(head: bytes) -> str | None:
    for magic, kind in IMAGES.items():
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def as_text(data: bytes) -> str | None:
    """``data`` as text when it is UTF-8 without NULs (its last character may be cut: ignored), else None."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start >= len(data) - 3:  # a character cut at the end of the head
            return data[: error.start].decode("utf-8")
        return None


def _shown(request: Request, name: str, **context: Any) -> HTMLResponse:
    return _page(request, name, link=link, mode_text=mode_text, **context)


def _error(request: Request, error: Exception) -> HTMLResponse:
    return _error_page(request, error)


def mtime(seconds: int) -> str:
    """Seconds since the epoch as ``2026-11-28 11:36:48`` (UTC)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


templates.env.filters["mtime"] = mtime


@router.get("/browse", response_class=HTMLResponse)
async def browse_page(request: Request, url: str = "", path: str = "", offset: int = 0) -> Response:
    """A directory of a version, a page of entries at a time."""
    try:
        client, _ = await _client(request, url.strip())
        place = await _place(request, url.strip(), path)
        if place.volume_url is None:
            entries = [BrowseEntry(path=name, kind="dir", mode=0o555) for name, _ in place.volumes]
            total, following = len(entries), None
        else:
            entry = await client.stat(place.volume_url, place.inner)
            if entry.kind != "dir":
                return await file_page(request, url, path)
            listing = await client.list(place.volume_url, place.inner, max(offset, 0), PAGE)
            entries, total, following = list(listing.items), listing.total, listing.next
    except RokError as error:
        return _error(request, error)
    prefix = place.path + "/" if place.path else ""
    rows = [(e, prefix + e.name) for e in entries]
    previous = max(offset - PAGE, 0) if offset > 0 else None
    return _shown(
        request,
        "browse.html",
        place=place,
        crumbs=crumbs(place),
        rows=rows,
        total=total,
        offset=offset,
        following=following,
        previous=previous,
    )


@router.get("/browse/file", response_class=HTMLResponse)
async def file_page(request: Request, url: str = "", path: str = "") -> Response:
    """A file's metadata and its first bytes (as text, or as an image), with a download and a compare form."""
    try:
        client, _ = await _client(request, url.strip())
        place = await _place(request, url.strip(), path)
        if place.volume_url is None:
            return await browse_page(request, url, path)
        entry = await client.stat(place.volume_url, place.inner)
        head = b""
        if entry.kind in ("file", "hardlink"):
            head = await client.read(place.volume_url, _content(entry, place.inner), 0, HEAD)
    except RokError as error:
        return _error(request, error)
    image = image_type(head)
    text = None if image else as_text(head)
    return _shown(
        request,
        "browse_file.html",
        place=place,
        crumbs=crumbs(place),
        entry=entry,
        image=image,
        text=text,
        cut=entry.size > len(head),
        head_bytes=len(head),
    )


def _content(entry: BrowseEntry, path: str) -> str:
    """The path whose bytes ``entry`` has (a hard link's are its first name's)."""
    return entry.link if entry.kind == "hardlink" and entry.link else path


@router.get("/browse/raw")
async def raw_file(request: Request, url: str = "", path: str = "", inline: int = 0) -> Response:
    """The whole file, streamed piece by piece as the restorer reads it: a download, or an image to show."""
    try:
        client, _ = await _client(request, url.strip())
        place = await _place(request, url.strip(), path)
        if place.volume_url is None:
            raise InvalidRequest(f"{path or '/'!r} of {url} is a directory: only files download")
        entry = await client.stat(place.volume_url, place.inner)
        if entry.kind not in ("file", "hardlink"):
            raise InvalidRequest(f"{path!r} of {url} is a {entry.kind}, not a file")
        source = _content(entry, place.inner)
        volume_url = place.volume_url
        first = await client.read(volume_url, source, 0, read_size(client.nc))
    except RokError as error:
        return Response(str(error), status_code=refusal(error)[0], media_type="text/plain")

    async def pieces() -> AsyncIterator[bytes]:
        yield first
        offset = len(first)
        while offset < entry.size:
            data = await client.read(volume_url, source, offset, read_size(client.nc))
            if not data:
                return
            yield data
            offset += len(data)

    shown = image_type(first) if inline else None
    name = entry.name.replace('"', "")
    headers = {
        "Content-Length": str(entry.size),
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'{"inline" if shown else "attachment"}; filename="{name}"',
    }
    return StreamingResponse(pieces(), media_type=shown or "application/octet-stream", headers=headers)


@router.get("/browse/diff", response_class=HTMLResponse)
async def diff_page(request: Request, a: str = "", b: str = "", path: str = "") -> Response:
    """One file of versions ``a`` and ``b`` side by side: a text diff of their first :data:`DIFF_BYTES`."""
    a, b = a.strip(), b.strip()
    try:
        if not b:
            raise InvalidRequest("give the URL of the version to compare with (b)")
        sides: list[str | None] = []
        sizes: list[int | None] = []
        for url in (a, b):
            client, _ = await _client(request, url)
            place = await _place(request, url, path)
            if place.volume_url is None:
                raise InvalidRequest(f"{path or '/'!r} of {url} is a directory: compare one file")
            try:
                entry = await client.stat(place.volume_url, place.inner)
            except NotFound:
                sides.append("")
                sizes.append(None)
                continue
            data = await client.read(place.volume_url, _content(entry, place.inner), 0, DIFF_BYTES)
            sides.append(as_text(data))
            sizes.append(entry.size)
    except RokError as error:
        return _error(request, error)
    table = None
    same = sides[0] == sides[1] and sizes[0] == sizes[1]
    if sides[0] is not None and sides[1] is not None and not same:
        table = difflib.HtmlDiff(wrapcolumn=100).make_table(
            sides[0].splitlines(), sides[1].splitlines(), "from", "to", context=True, numlines=3
        )
    return _shown(request, "browse_diff.html", a=a, b=b, path=path, table=table, sizes=sizes, same=same, sides=sides)
