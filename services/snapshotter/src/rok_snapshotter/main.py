"""The snapshotter's composition root: settings → repository, records, snapshot taker → one durable consumer."""

from __future__ import annotations

import asyncio
import logging
import sys

from rokcommon.errors import PermanentError, TemporaryError
from rokcommon.service import Service
from rokcommon.settings import InvalidSettings, load
from rokcommon.telemetry import Instruments

from rok_snapshotter.handlers import subscribe
from rok_snapshotter.records import SnapshotRecords
from rok_snapshotter.repository import RepositoryHandle
from rok_snapshotter.settings import SnapshotterSettings
from rok_snapshotter.snapshots import Repositories, SnapshotTaker

log = logging.getLogger(__name__)

STARTUP_OPEN_TIMEOUT = 15.0


def build(
    settings: SnapshotterSettings | None = None,
    *,
    instruments: Instruments | None = None,
    repository: Repositories | None = None,
) -> Service:
    """The snapshotter service; ``instruments`` and ``repository`` replace the defaults (tests observe through them)."""
    settings = settings or SnapshotterSettings()
    service = Service("snapshotter", settings, graceful_timeout=settings.graceful_timeout)
    repository = repository or RepositoryHandle(settings.repository_url, cache_dir=settings.resolved_cache_dir)
    taker = SnapshotTaker(
        repository=repository,
        records=SnapshotRecords(lambda: service.js, settings.records_bucket),
        publish=service.publish,
        pods_dir=settings.kubelet_pods_dir,
        concurrency=settings.snapshot_concurrency,
        instruments=instruments or service.instruments,
        retry_delay=settings.retry_delay,
    )
    subscribe(service, taker, settings)

    @service.app.on_startup
    async def open_repository() -> None:
        log.info(
            "snapshotter for node %s, repository %s, %d snapshot(s) at once",
            settings.node_name,
            settings.repository_url,
            settings.snapshot_concurrency,
        )
        try:  # open it now to fail early on a wrong URL or credentials; an unreachable store is not fatal
            await asyncio.wait_for(repository.get(), STARTUP_OPEN_TIMEOUT)
        except (TemporaryError, TimeoutError) as error:  # the first event will try again
            log.warning("repository %s not opened yet: %s", settings.repository_url, error or "timed out")
        except PermanentError as error:
            log.error("cannot use repository %s: %s", settings.repository_url, error)
            raise

    if isinstance(repository, RepositoryHandle):
        service.app.after_shutdown(repository.close)
    return service


def main() -> None:
    try:
        settings = load(SnapshotterSettings)
    except InvalidSettings as error:
        sys.exit(f"rok-snapshotter: {error}")
    build(settings).run()
