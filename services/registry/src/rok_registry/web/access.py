"""How the web pages reach the registry's answers and the bus: one NATS connection per app, opened lazily.

A page shows one namespace at a time, the one chosen with the namespace switcher (``?ns=``, then remembered in a
cookie), else the configured one (:func:`page_namespace`); every answer it asks for is checked first: the caller
must hold READ there (:func:`rok_registry.gate.authorize`). In the registry's app the pages ask its query layer
directly (``app.state.queries``, bound here to the page's namespace); elsewhere they ask the registry over NATS
with :class:`~rokcommon.registry_client.RegistryClient`: the same queries, the same namespace scoping, the same
errors either way. The bus connection is the service's
own (``app.state.nats()``) when there is one. Restores are requested on the bus and followed in memory
(:class:`~rokcommon.restores.RestoreWatch`), so the page can poll their progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from rokcommon import streams, subjects
from rokcommon.authz import READ, Identity
from rokcommon.connection import connect
from rokcommon.errors import NotFound
from rokcommon.events import RestoreTarget
from rokcommon.registry_client import RegistryClient
from rokcommon.registry_contract import GetLineage, ListBuckets, ListFiles, ListVersions
from rokcommon.restores import RestoreWatch, request_restore
from rokcommon.settings import RokSettings

from rok_registry.gate import authorize, identity

MAX_WATCHES = 200  # restores remembered for polling; the oldest finished ones are forgotten first
ASK_REPLICAS = 1.0  # seconds to wait for the replica that accepted a restore to say how it is going
NAMESPACE_COOKIE = "rok_ns"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a Kubernetes namespace name


class WebBus:
    """The web pages' connection to NATS, their registry client, and the restores they follow."""

    def __init__(self, settings: RokSettings, shared: Callable[[], Client | None] | None = None) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self._shared = shared
        self._nc: Client | None = None
        self._lock = asyncio.Lock()
        self._streams_ready = False
        self.restores: OrderedDict[str, RestoreWatch] = OrderedDict()
        self.owners: dict[str, str] = {}  # request id → the user who asked; nobody else sees its progress
        self._answering: Subscription | None = None

    async def nc(self) -> Client:
        shared = self._shared() if self._shared is not None else None
        if shared is not None and not shared.is_closed:
            return shared
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self.settings, name="rok-web")
            return self._nc

    async def registry(self, namespace: str) -> RegistryClient:
        return RegistryClient(await self.nc(), namespace)

    async def restore(
        self, url: str, target: RestoreTarget, volumes: tuple[str, ...], *, namespace: str, requested_by: str
    ) -> RestoreWatch:
        nc = await self.nc()
        if not self._streams_ready:
            await streams.ensure_streams(nc.jetstream())
            self._streams_ready = True
        if self._answering is None:  # before the first restore it follows: another replica may be polled for it
            self._answering = await nc.subscribe(f"{subjects.RESTORE_WATCHES}.*", cb=self._answer)
        watch = await request_restore(
            nc, namespace=namespace, url=url, target=target, volumes=volumes, requested_by=requested_by
        )
        self.restores[watch.request_id] = watch
        self.owners[watch.request_id] = requested_by
        asyncio.get_running_loop().create_task(self._forget_when_done(watch))
        self._trim()
        return watch

    async def follow(self, request_id: str, user: str) -> dict[str, Any]:
        """The state of a restore ``user`` asked for (another's is as unknown as one never asked): followed here,
        or by the replica that accepted it, which is asked over the bus (behind a Service, a client's polls reach
        any replica)."""
        watch = self.restores.get(request_id)
        if watch is not None:
            if self.owners.get(request_id) != user:
                raise NotFound(f"no restore {request_id!r} was requested from this page (or it was forgotten)")
            return watch.to_dict()
        nc = await self.nc()
        asked = json.dumps({"request_id": request_id, "user": user}).encode()
        try:
            reply = await nc.request(subjects.restore_watch(request_id), asked, timeout=ASK_REPLICAS)
        except (NatsTimeout, NoRespondersError):
            raise NotFound(f"no restore {request_id!r} was requested from this page (or it was forgotten)") from None
        state: dict[str, Any] = json.loads(reply.data)
        return state

    async def _answer(self, msg: Msg) -> None:
        """Another replica asks for a restore: answer if it is followed here for that user, else say nothing."""
        try:
            asked = json.loads(msg.data)
            request_id, user = str(asked["request_id"]), str(asked["user"])
        except (ValueError, KeyError, TypeError):
            return
        watch = self.restores.get(request_id)
        if watch is not None and self.owners.get(request_id) == user and msg.reply:
            await msg.respond(json.dumps(watch.to_dict()).encode())

    async def _forget_when_done(self, watch: RestoreWatch) -> None:
        await watch.done.wait()
        await watch.close()

    def _trim(self) -> None:
        while len(self.restores) > MAX_WATCHES:
            oldest = next((k for k, w in self.restores.items() if w.done.is_set()), next(iter(self.restores)))
            self.restores.pop(oldest)
            self.owners.pop(oldest, None)

    async def close(self) -> None:
        if self._answering is not None:
            with contextlib.suppress(Exception):
                await self._answering.unsubscribe()
        for watch in self.restores.values():
            await watch.close()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()


def web_bus(request: Request) -> WebBus:
    """The app's :class:`WebBus`, created on first use with the settings on ``app.state.settings`` (or env)."""
    state = request.app.state
    current = getattr(state, "rok_web_bus", None)
    if current is None:
        settings = getattr(state, "settings", None)
        shared = getattr(state, "nats", None)
        current = WebBus(settings if isinstance(settings, RokSettings) else RokSettings(), shared)
        state.rok_web_bus = current
    return current


class ScopedQueries:
    """The registry's query layer with the namespace bound: the methods of a RegistryClient.

    ``check`` runs before every answer (the caller may read the namespace), so that a refusal reaches the page
    as any other error does, and is shown on its error page.
    """

    def __init__(self, queries: Any, namespace: str, check: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.queries = queries
        self.namespace = namespace
        self.check = check

    async def _checked(self) -> None:
        if self.check is not None:
            await self.check()

    async def buckets_page(self, **page: Any) -> Any:
        await self._checked()
        return await self.queries.buckets(ListBuckets(namespace=self.namespace, **page))

    async def files_page(self, bucket: str, **page: Any) -> Any:
        await self._checked()
        return await self.queries.files(ListFiles(namespace=self.namespace, bucket=bucket, **page))

    async def versions_page(self, bucket: str, file: str, **page: Any) -> Any:
        await self._checked()
        return await self.queries.versions(ListVersions(namespace=self.namespace, bucket=bucket, file=file, **page))

    async def lineage_page(self, bucket: str, file: str, **page: Any) -> Any:
        await self._checked()
        return await self.queries.lineage_page(GetLineage(namespace=self.namespace, bucket=bucket, file=file, **page))

    async def resolve(self, url: str) -> Any:
        await self._checked()
        return await self.queries.resolve(self.namespace, url)

    async def lineage(self, bucket: str, file: str) -> Any:
        await self._checked()
        return await self.queries.lineage(self.namespace, bucket, file)

    async def search(self, text: str) -> Any:
        await self._checked()
        return await self.queries.search(self.namespace, text)


class _Bound:
    """A RegistryClient (namespace bound already) with ``check`` before every call, as :class:`ScopedQueries`."""

    def __init__(self, client: RegistryClient, check: Callable[[], Awaitable[Any]]) -> None:
        self.client, self.check = client, check

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        async def checked(*args: Any, **kwargs: Any) -> Any:
            await self.check()
            return await method(*args, **kwargs)

        return checked


def chosen_namespace(request: Request) -> str | None:
    """The namespace asked for: ``?ns=``, else the one remembered from the switcher; None if neither."""
    for chosen in (request.query_params.get("ns"), request.cookies.get(NAMESPACE_COOKIE)):
        if chosen and _NAME.match(chosen):
            return chosen
    return None


def page_namespace(request: Request) -> str:
    """The namespace a page shows: the one chosen, else the page's default (the first the caller may read, as
    the switcher found it), else the configured one."""
    decided: str | None = getattr(request.state, "namespace", None)
    return decided or chosen_namespace(request) or web_bus(request).namespace


async def registry(request: Request) -> Any:
    """What the pages query, in the page's namespace, checked: the app's own query layer, else NATS."""
    namespace = page_namespace(request)

    async def check() -> Identity:
        return await authorize(request, namespace, READ)

    queries = getattr(request.app.state, "queries", None)
    if queries is not None:
        return ScopedQueries(queries, namespace, check)
    return _Bound(await web_bus(request).registry(namespace), check)


async def namespaces(request: Request) -> list[str]:
    """The namespaces the switcher offers: those the registry holds lineage of (and the page's own) that the
    caller may read, each checked as a page of it would be."""
    queries = getattr(request.app.state, "queries", None)
    known = set(await queries.namespaces()) if queries is not None else set()
    known |= {page_namespace(request)}
    access, who = request.app.state.gate.access, identity(request)
    ordered = sorted(known)
    answers = await asyncio.gather(*(access.allowed(who, ns, READ) for ns in ordered))  # each cached a while
    return [ns for ns, allowed in zip(ordered, answers, strict=True) if allowed]
