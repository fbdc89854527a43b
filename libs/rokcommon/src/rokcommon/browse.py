"""Looking inside a version without restoring it, asked over NATS request-reply of a service that holds the store.

The registry, its web pages and the CLI hold no store, so a look inside a volume is a :class:`BrowseRequest` on
:data:`~rokcommon.subjects.STORE_BROWSE`, answered by the restorer, which resolves the URL through the registry
and checks that whoever asks may read the version's namespace, as it does for a restore. One request asks one
thing of one volume (a volume URL, or a version URL of a version with one volume), in bounded pieces:

- ``stat``: one path's entry (:class:`BrowseEntry`);
- ``list``: a directory's entries from ``offset``, at most ``limit`` (:class:`Listing`, with ``next``);
- ``links``: the files with hard links and their later names (what a file system needs for link counts);
- ``read``: ``limit`` bytes of a file from ``offset``; the reply is the byte ``\\0`` followed by the bytes
  (every chunk checked against its BLAKE3 id by the restorer), so that no base64 inflates them.

Every other reply is a :class:`~rokcommon.registry_contract.Reply` in JSON, its error one of the registry's kinds;
no reply is ever larger than the bus's ``max_payload`` (:func:`~rokcommon.registry_contract.reply_budget`): a
listing is cut short (``next``) and a read asks for at most :func:`read_size` bytes. Use::

    client = BrowseClient(nc, "team-a")
    listing = await client.list(volume_url, "sub")
    head = await client.read(volume_url, "sub/model.json", 0, 4096)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from nats.aio.client import Client
from pydantic import Field

from rokcommon import payloads, subjects
from rokcommon.events import Model, Name
from rokcommon.registry_contract import Reply, raise_error, reply_budget
from rokcommon.urls import parse_url

BROWSE_TIMEOUT = 30.0  # seconds: one answer reads a few trees or a few chunks of the store
DEFAULT_LISTING = 200  # entries of a directory a listing asks for
MAX_LISTING = 5000
DATA = b"\0"  # the first byte of a read's reply; a JSON reply never starts with it

Op = Literal["stat", "list", "links", "read"]
Kind = Literal["dir", "file", "hardlink", "symlink", "fifo", "char", "block"]
KINDS: dict[str, Kind] = {
    "d": "dir",
    "f": "file",
    "h": "hardlink",
    "l": "symlink",
    "p": "fifo",
    "c": "char",
    "b": "block",
}


class BrowseRequest(Model):
    """One question about the volume ``url`` (see the module's docstring), asked within ``namespace`` by
    ``requested_by`` (in a cluster the person or workload the answer is for; the restorer checks them)."""

    namespace: Name
    url: str
    op: Op
    path: str = Field("", max_length=4096)
    offset: int = Field(0, ge=0)
    limit: int = Field(0, ge=0)
    requested_by: str = ""


class BrowseEntry(Model):
    """One entry of a volume. ``path`` is ``""`` for the volume's root; a hard link's ``link`` is the path of the
    file whose content and metadata it shares (its size and mode are that file's)."""

    path: str
    kind: Kind
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0
    allocated: int = 0  # bytes of a file's content that are data, not holes (a sparse file's are fewer than size)
    target: str | None = None
    link: str | None = None
    rdev: int = 0

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class Listing(Model):
    """A page of a directory's entries, in name order; ``next`` is the offset of the following page."""

    entry: BrowseEntry
    items: tuple[BrowseEntry, ...] = ()
    total: int = 0
    next: int | None = None


class Links(Model):
    """Files with hard links → the paths of their later names (in walk order: the file comes first)."""

    links: dict[str, tuple[str, ...]] = {}


def read_size(nc: Client) -> int:
    """The most bytes one read's reply carries on this connection's server."""
    return reply_budget(payloads.limit(nc)) - len(DATA)


class BrowseClient:
    """Asks :data:`~rokcommon.subjects.STORE_BROWSE` on ``nc``; errors are the registry's kinds
    (:class:`~rokcommon.errors.NotFound`, :class:`~rokcommon.errors.Forbidden`, …), and
    :class:`~rokcommon.errors.TemporaryError` when no service answers."""

    def __init__(self, nc: Client, namespace: str, *, requested_by: str = "", timeout: float = BROWSE_TIMEOUT) -> None:
        self.nc = nc
        self.namespace = namespace
        self.requested_by = requested_by
        self.timeout = timeout

    async def stat(self, url: str, path: str = "") -> BrowseEntry:
        return BrowseEntry.model_validate(await self._ask(url, "stat", path))

    async def list(self, url: str, path: str = "", offset: int = 0, limit: int = DEFAULT_LISTING) -> Listing:
        return Listing.model_validate(await self._ask(url, "list", path, offset, limit))

    async def list_all(self, url: str, path: str = "") -> AsyncIterator[BrowseEntry]:
        """Every entry of a directory, page after page."""
        offset: int | None = 0
        while offset is not None:
            page = await self.list(url, path, offset, MAX_LISTING)
            for item in page.items:
                yield item
            offset = page.next

    async def links(self, url: str) -> dict[str, tuple[str, ...]]:
        return Links.model_validate(await self._ask(url, "links")).links

    async def read(self, url: str, path: str, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of a file from ``offset`` (fewer at its end), in as many requests as it takes."""
        most = read_size(self.nc)
        parts: list[bytes] = []
        while size > 0:
            data = await self._request(url, "read", path, offset, min(size, most))
            if not data.startswith(DATA):
                self._error(data)
            part = data[len(DATA) :]
            parts.append(part)
            if len(part) < min(size, most):
                break
            offset += len(part)
            size -= len(part)
        return b"".join(parts)

    async def _ask(self, url: str, op: Op, path: str = "", offset: int = 0, limit: int = 0) -> dict[str, object]:
        data = await self._request(url, op, path, offset, limit)
        reply = self._error(data)
        return reply.result or {}

    def _error(self, data: bytes) -> Reply:
        reply = Reply.model_validate_json(data)
        if reply.error is not None:
            raise_error(reply.error)
        return reply

    async def _request(self, url: str, op: Op, path: str, offset: int, limit: int) -> bytes:
        parse_url(url)
        request = BrowseRequest(
            namespace=self.namespace,
            url=url,
            op=op,
            path=path,
            offset=offset,
            limit=limit,
            requested_by=self.requested_by,
        )
        msg = await payloads.request(
            self.nc,
            subjects.STORE_BROWSE,
            request.model_dump_json().encode(),
            timeout=self.timeout,
            nobody=f"no service answers {subjects.STORE_BROWSE}: is rok-restorer running (rok up)?",
            too_late=f"no answer about {url} came back within {self.timeout:g}s",
        )
        body: bytes = msg.data
        return body
