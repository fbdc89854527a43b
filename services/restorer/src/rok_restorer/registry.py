"""The registry, as the restorer's :class:`~rok_restorer.restoring.Catalog`: URL resolution over NATS."""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client
from rokcommon.registry_client import RegistryClient
from rokcommon.registry_contract import Resolved


class RegistryCatalog:
    """``connection`` gives the NATS client to ask on (the service's own, once it is connected)."""

    def __init__(self, connection: Callable[[], Client], *, timeout: float) -> None:
        self.connection = connection
        self.timeout = timeout

    async def resolve(self, namespace: str, url: str) -> Resolved:
        return await RegistryClient(self.connection(), namespace, timeout=self.timeout).resolve(url)
