"""The runner's :class:`~rok_pipeline_watcher.runner.engine.Bus` on NATS JetStream."""

from __future__ import annotations

from types import TracebackType

from nats.aio.client import Client
from rokcommon import bus
from rokcommon.events import Event, RestoreCompleted, RestoreFailed, VersionCommitted
from rokcommon.permissions import RUNNER
from rokcommon.settings import RokSettings
from rokcommon.streams import ensure_streams

from rok_pipeline_watcher.follow import Follower, commit_key, commits, restores
from rok_pipeline_watcher.runner.engine import RestoreFailedError


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

    async def committed(
        self, workflow_uid: str, step_id: str | None, phase: str, timeout: float
    ) -> VersionCommitted | None:
        assert self._commits is not None
        return await self._commits.wait(commit_key(workflow_uid, step_id, phase), timeout)

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
