"""The retention policy the registry applies on its own (``ROK_RETENTION_*``): a forget by its rules in every
namespace, at start and then every interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from rokcommon.errors import TemporaryError
from rokcommon.registry_contract import Forget, ForgetReport, KeepRules

from rok_registry.retention import POLICY, Retention

log = logging.getLogger(__name__)


class Policy:
    """Forget by ``rules`` in every namespace, every ``interval`` seconds (the first time at start)."""

    def __init__(self, retention: Retention, rules: KeepRules, interval: float) -> None:
        self.retention = retention
        self.rules = rules
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def apply(self) -> list[ForgetReport]:
        """One round: a forget in each namespace, recorded as the policy's."""
        reports = []
        for namespace in await self.retention.namespaces():
            forget = Forget(namespace=namespace, rules=self.rules, requested_by=POLICY)
            reports.append(await self.retention.forget(forget, by=POLICY))
        return reports

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._forever(), name="rok-retention-policy")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self) -> None:
        while True:
            try:
                await self.apply()
            except TemporaryError as error:  # the database is away: the next round tries again
                log.warning("the retention policy could not run: %s", error)
            except Exception:
                log.exception("the retention policy failed")
            await asyncio.sleep(self.interval)
