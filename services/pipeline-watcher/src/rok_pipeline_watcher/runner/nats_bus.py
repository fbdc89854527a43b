"""The runner's :class:`~rok_pipeline_watcher.runner.engine.Bus` on NATS JetStream."""

from __future__ import annotations

import asyncio
from types import TracebackType

from nats.aio.client import Client
from rokcommon import bus
from rokcommon.errors import NotFound, TemporaryError
from rokcommon.events import Event, RestoreCompleted, RestoreFailed, VersionCommitted
from rokcommon.follow import Follower, commits, restores
from rokcommon.permissions import RUNNER
from rokcommon.registry_client import RegistryClient
from rokcommon.settings import RokSettings
from rokcommon.streams import ensure_streams
from rokcommon.urls import parse_url
from rokcommon.versions import VersionKey

from rok_pipeline_watcher.runner.engine import RestoreFailedError

SETTLED_POLL = 0.1  # seconds between two questions to the registry whether it recorded a run's end


class NatsBus:
    """Publishes with ``Nats-Msg-Id``; follows commits and restore outcomes from the moment it connects."""

    def __init__(self, settings: RokSettings) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._commits: Follower[VersionCommitted] | None = None
        self._restores: Follower[RestoreCompleted | RestoreFailed] | None = None

    async def __aenter__(self) -> NatsBus:
        self._nc = await bus.connect(self.settings, name="rok-run", local_user=RUNNER)
        self._js = self._nc.jetstream()
        await ensure_streams(self._js)
        self._commits = commits(self._js)
        self._restores = restores(self._js)
        await self._commits.start()
        await self._restores.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        for follower in (self._commits, self._restores):
            if follower is not None:
                await follower.stop()
        if self._nc is not None:
            await self._nc.drain()

    async def publish(self, event: Event) -> None:
        await bus.publish(self._js, event)

    async def committed(self, key: VersionKey, timeout: float) -> VersionCommitted | None:
        assert self._commits is not None
        return await self._commits.wait(key, timeout)

    async def settled(self, run_url: str, timeout: float) -> bool:
        """Ask the registry for the run until it is recorded as ended (its ``final`` tag is settled with it)."""
        assert self._nc is not None
        url = parse_url(run_url)
        assert url.file is not None, run_url
        registry = RegistryClient(self._nc, url.namespace)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                lineage = await registry.lineage_page(url.bucket, url.file, limit=1)  # its run is enough
                if lineage.file.status != "running":
                    return True
            except (NotFound, TemporaryError):
                pass  # not recorded yet, or the registry is busy: ask again
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(SETTLED_POLL)

    async def restored(self, request_id: str, timeout: float) -> RestoreCompleted:
        assert self._restores is not None
        outcome = await self._restores.wait(request_id, timeout)
        if outcome is None:
            raise RestoreFailedError(
                f"the restorer did not clone the notebook's volumes within {timeout:.0f}s: is it running "
                "(`rok status`, `rok up`)?"
            )
        if isinstance(outcome, RestoreFailed):
            raise RestoreFailedError(f"cloning the notebook's volumes failed: {outcome.reason}")
        return outcome
