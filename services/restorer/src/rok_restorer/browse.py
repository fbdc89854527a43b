"""Looks inside versions on ``rok.store.browse.v1`` for those who hold no store (the registry's pages, ``rok ls
--path``, ``rok cat``, ``rok mount``).

Each request is judged on its own, as a restore is: its URL must name the namespace it is asked in, in a cluster
the user it names must be allowed to read that namespace (:meth:`~rok_restorer.authority.Authority.check_read`),
and the registry resolves the URL within that namespace (an unknown URL, or another namespace's, is refused there
too). What a URL resolves to is remembered for a few seconds (``RESOLVED_SECONDS``), so that reading a file in
many pieces does not ask the registry each time; the checks of the request itself run every time.

The store is read with :class:`rokstore.SnapshotView`: only the trees on a path and the chunks of the bytes asked
for, each chunk checked against its BLAKE3 id; one chunk cache serves every request of this process. Replies
never outgrow the bus's ``max_payload``: a listing is cut into pages that fit, a read is refused larger than what
fits. Every replica answers in one queue group, several requests at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from pathlib import Path

from faststream.nats import NatsMessage
from pydantic import ValidationError
from rokcommon import payloads, subjects
from rokcommon.browse import DATA, KINDS, MAX_LISTING, BrowseEntry, BrowseRequest, Links, Listing
from rokcommon.errors import InvalidRequest, RokError, TemporaryError
from rokcommon.events import invalid_event
from rokcommon.registry_contract import Member, Reply, encode_reply, error_body, reply_budget
from rokcommon.service import Service
from rokstore import ChunkCache, Node, Repository, SnapshotView, open_repository

from rok_restorer.authority import Authority
from rok_restorer.restoring import Catalog

log = logging.getLogger(__name__)

QUEUE_GROUP = "rok-restorer-browse"
RESOLVED_SECONDS = 5.0
VIEWS = 64  # snapshots kept open (their records and tree indexes)
WORKERS = 8  # requests answered at once


def entry_of(node: Node, content: Node | None = None) -> BrowseEntry:
    """What a browser shows of ``node``; a hard link shows the size and metadata of the file it names."""
    shown = content or node
    return BrowseEntry(
        path=node.path,
        kind=KINDS[node.kind],
        mode=shown.mode,
        uid=shown.uid,
        gid=shown.gid,
        mtime_ns=shown.mtime_ns,
        size=shown.size,
        allocated=sum(length for chunk, length in shown.chunks if chunk is not None),
        target=node.target,
        link=node.link,
        rdev=node.rdev,
    )


class Browser:
    """Answers browse requests: checks them with ``authority``, resolves URLs with ``catalog``, reads the store."""

    def __init__(self, catalog: Catalog, authority: Authority, *, cache_dir: Path | None = None) -> None:
        self.catalog = catalog
        self.authority = authority
        self.cache_dir = cache_dir
        self.cache = ChunkCache()
        self._repos: dict[str, Repository] = {}
        self._views: OrderedDict[tuple[str, str], SnapshotView] = OrderedDict()
        self._resolved: dict[tuple[str, str], tuple[float, Member]] = {}
        self._opening = asyncio.Lock()

    async def close(self) -> None:
        for view in self._views.values():
            await view.close()
        for repo in self._repos.values():
            await repo.close()
        self._views.clear()
        self._repos.clear()

    async def member(self, request: BrowseRequest) -> Member:
        """The one volume the request's URL names (checked, then resolved through the registry)."""
        await self.authority.check_read(request.namespace, request.url, request.requested_by)
        key = (request.namespace, request.url)
        hit = self._resolved.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        resolved = await self.catalog.resolve(request.namespace, request.url)
        if len(resolved.members) != 1:
            held = ", ".join(m.volume for m in resolved.members) or "none yet"
            raise InvalidRequest(
                f"{request.url} holds {len(resolved.members)} volumes ({held}): name one with &volume=NAME"
            )
        member = resolved.members[0]
        if len(self._resolved) > 10_000:
            self._resolved.clear()
        self._resolved[key] = (time.monotonic() + RESOLVED_SECONDS, member)
        return member

    async def view(self, member: Member) -> SnapshotView:
        key = (member.repository, member.snapshot_id)
        view = self._views.get(key)
        if view is not None:
            self._views.move_to_end(key)
            return view
        async with self._opening:
            view = self._views.get(key)
            if view is None:
                repo = self._repos.get(member.repository)
                if repo is None:
                    repo = await open_repository(member.repository, cache_dir=self.cache_dir)
                    self._repos[member.repository] = repo
                view = await SnapshotView.open(repo, member.snapshot_id, self.cache)
                self._views[key] = view
                while len(self._views) > VIEWS:
                    _, old = self._views.popitem(last=False)
                    await old.close()
        return view

    async def answer(self, request: BrowseRequest, budget: int) -> bytes:
        view = await self.view(await self.member(request))
        if request.op == "read":
            most = budget - len(DATA)
            if request.limit > most:
                raise InvalidRequest(f"a read of {request.limit} bytes does not fit one bus message: ask for {most}")
            return DATA + await view.read(await view.lookup(request.path), request.offset, request.limit)
        if request.op == "stat":
            node = await view.lookup(request.path)
            content = await view.content(node) if node.kind == "h" else None
            return _encode(Reply(result=entry_of(node, content).model_dump(mode="json")))
        if request.op == "links":
            links = Links(links=await view.hard_links())
            return encode_reply(Reply(result=links.model_dump(mode="json")), budget, "the hard links of a volume")
        return await self._listing(view, request, budget)

    async def _listing(self, view: SnapshotView, request: BrowseRequest, budget: int) -> bytes:
        directory = await view.lookup(request.path)
        nodes = await view.listdir(directory)
        limit = min(request.limit or MAX_LISTING, MAX_LISTING)
        page = nodes[request.offset : request.offset + limit]
        shown = [entry_of(n, await view.content(n) if n.kind == "h" else None) for n in page]
        while True:  # the largest page that fits one message
            end = request.offset + len(shown)
            listing = Listing(
                entry=entry_of(directory),
                items=tuple(shown),
                total=len(nodes),
                next=end if end < len(nodes) else None,
            )
            reply = Reply(result=listing.model_dump(mode="json"))
            data = _encode(reply)
            if len(data) <= budget:
                return data
            if len(shown) <= 1:  # one entry alone too large: the typed error that says so
                return encode_reply(reply, budget, "a directory listing")
            shown = shown[: len(shown) // 2]

    async def reply(self, data: bytes, budget: int) -> bytes:
        """The reply to one request: the bytes or the answer, or the typed error that says why there is none."""
        try:
            request = BrowseRequest.model_validate_json(data)
        except ValidationError as error:
            return _encode(Reply(error=error_body(InvalidRequest(str(invalid_event(BrowseRequest, error))))))
        try:
            return await self.answer(request, budget)
        except RokError as error:
            log.info("browse %s %s of %s refused or failed: %s", request.op, request.path, request.url, error)
            return _encode(Reply(error=error_body(error)))
        except Exception as error:  # the store misbehaved: the asker may try again
            log.exception("browse %s %s of %s failed", request.op, request.path, request.url)
            reason = f"{type(error).__name__}: {error}"
            return _encode(Reply(error=error_body(TemporaryError(f"the store could not be read: {reason}"))))


def _encode(reply: Reply) -> bytes:
    return reply.model_dump_json().encode()


def register(service: Service, browser: Browser) -> None:
    """Answer ``rok.store.browse.v1`` on the service's broker, one replica per request (a core-NATS queue group)."""

    @service.broker.subscriber(subjects.STORE_BROWSE, queue=QUEUE_GROUP, max_workers=WORKERS)
    async def answer_browse(msg: NatsMessage) -> bytes:
        return await browser.reply(msg.raw_message.data, reply_budget(payloads.limit(service.broker.connection)))
