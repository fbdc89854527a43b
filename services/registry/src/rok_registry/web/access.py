"""How the web pages reach the registry's answers and the bus: one NATS connection per app, opened lazily.

In the registry's app the pages ask its query layer directly (``app.state.queries``, bound here to the page's
namespace); elsewhere they ask the registry over NATS with :class:`~rokcommon.registry_client.RegistryClient`:
the same queries, the same namespace scoping, the same errors either way. The bus connection is the service's
own (``app.state.nats()``) when there is one. Restores are requested on the bus and followed in memory
(:class:`~rokcommon.restores.RestoreWatch`), so the page can poll their progress.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fastapi import Request
from nats.aio.client import Client
from rokcommon import streams
from rokcommon.connection import connect
from rokcommon.errors import NotFound
from rokcommon.registry_client import RegistryClient
from rokcommon.registry_contract import GetLineage, ListBuckets, ListFiles, ListVersions
from rokcommon.restores import RestoreWatch, request_restore
from rokcommon.settings import RokSettings

MAX_WATCHES = 200  # restores remembered for polling; the oldest finished ones are forgotten first


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

    async def nc(self) -> Client:
        shared = self._shared() if self._shared is not None else None
        if shared is not None and not shared.is_closed:
            return shared
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self.settings, name="rok-web")
            return self._nc

    async def registry(self) -> RegistryClient:
        return RegistryClient(await self.nc(), self.namespace)

    async def restore(self, url: str, target: str, volumes: tuple[str, ...]) -> RestoreWatch:
        nc = await self.nc()
        if not self._streams_ready:
            await streams.ensure_streams(nc.jetstream())
            self._streams_ready = True
        watch = await request_restore(
            nc, namespace=self.namespace, url=url, target_dir=target, volumes=volumes, requested_by="rok-web"
        )
        self.restores[watch.request_id] = watch
        asyncio.get_running_loop().create_task(self._forget_when_done(watch))
        self._trim()
        return watch

    def watch(self, request_id: str) -> RestoreWatch:
        try:
            return self.restores[request_id]
        except KeyError:
            raise NotFound(f"no restore {request_id!r} was requested from this page (or it was forgotten)") from None

    async def _forget_when_done(self, watch: RestoreWatch) -> None:
        await watch.done.wait()
        await watch.close()

    def _trim(self) -> None:
        while len(self.restores) > MAX_WATCHES:
            oldest = next((k for k, w in self.restores.items() if w.done.is_set()), next(iter(self.restores)))
            self.restores.pop(oldest)

    async def close(self) -> None:
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
    """The registry's query layer with the namespace bound: the methods of a RegistryClient."""

    def __init__(self, queries: Any, namespace: str) -> None:
        self.queries = queries
        self.namespace = namespace

    async def buckets_page(self, **page: Any) -> Any:
        return await self.queries.buckets(ListBuckets(namespace=self.namespace, **page))

    async def files_page(self, bucket: str, **page: Any) -> Any:
        return await self.queries.files(ListFiles(namespace=self.namespace, bucket=bucket, **page))

    async def versions_page(self, bucket: str, file: str, **page: Any) -> Any:
        return await self.queries.versions(ListVersions(namespace=self.namespace, bucket=bucket, file=file, **page))

    async def lineage_page(self, bucket: str, file: str, **page: Any) -> Any:
        return await self.queries.lineage_page(GetLineage(namespace=self.namespace, bucket=bucket, file=file, **page))

    async def resolve(self, url: str) -> Any:
        return await self.queries.resolve(self.namespace, url)

    async def lineage(self, bucket: str, file: str) -> Any:
        return await self.queries.lineage(self.namespace, bucket, file)

    async def search(self, text: str) -> Any:
        return await self.queries.search(self.namespace, text)


async def registry(request: Request) -> Any:
    """What the pages query: the app's own query layer if it has one, else the registry over NATS."""
    queries = getattr(request.app.state, "queries", None)
    if queries is not None:
        return ScopedQueries(queries, web_bus(request).namespace)
    return await web_bus(request).registry()
