"""The snapshotter's composition root: settings → repository, records, volumes, snapshot taker → its consumers.

Volumes are local directories under ``ROK_VOLUME_ROOTS`` (``ROK_KUBE=off``, the default), or, in a cluster,
the claims of the runs' pods on this node, checked with the Kubernetes API.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from functools import partial
from typing import Any

from rokcommon.errors import PermanentError, TemporaryError
from rokcommon.health import cached
from rokcommon.service import Service
from rokcommon.settings import InvalidSettings, load
from rokcommon.telemetry import Instruments

from rok_snapshotter.handlers import subscribe
from rok_snapshotter.records import SnapshotRecords
from rok_snapshotter.repository import RepositoryHandle
from rok_snapshotter.settings import SnapshotterSettings
from rok_snapshotter.snapshots import Repositories, SnapshotTaker, Volumes
from rok_snapshotter.volumes import LocalVolumes

log = logging.getLogger(__name__)

STARTUP_OPEN_TIMEOUT = 15.0


def build(
    settings: SnapshotterSettings | None = None,
    *,
    instruments: Instruments | None = None,
    repository: Repositories | None = None,
    api_client: Any = None,
) -> Service:
    """The snapshotter service; ``instruments`` and ``repository`` replace the defaults (tests observe through them),
    ``api_client`` how the Kubernetes API is reached (tests)."""
    settings = settings or SnapshotterSettings()
    service = Service("snapshotter", settings, graceful_timeout=settings.graceful_timeout)
    repository = repository or RepositoryHandle(settings.repository_url, cache_dir=settings.resolved_cache_dir)
    taker = SnapshotTaker(
        repository=repository,
        records=SnapshotRecords(lambda: service.js, settings.records_bucket),
        publish=service.publish,
        volumes=volumes(settings, api_client),
        concurrency=settings.snapshot_concurrency,
        instruments=instruments or service.instruments,
        retry_delay=settings.retry_delay,
    )
    subscribe(service, taker, settings)
    service.health.add("store", cached(partial(store_reachable, repository), seconds=settings.health_cache))

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


async def store_reachable(repository: Repositories) -> None:
    """The repository answers: opened (or created) once, then its config object read again."""
    repo = await repository.get()
    await repo.read_config()


def volumes(settings: SnapshotterSettings, api_client: Any = None) -> Volumes:
    """Where this snapshotter may read volumes: in a cluster the run pods' claims, else directories in its roots."""
    if not settings.in_cluster:
        log.info("volumes are directories in %s", ", ".join(map(str, settings.roots)) or "no directory")
        return LocalVolumes(settings.roots)
    log.info("volumes are the claims of run pods on node %s, under %s", settings.node_name, settings.kubelet_pods_dir)
    from rokcommon.kube import api_client as kubernetes_api

    from rok_snapshotter.kube import ClusterVolumes

    return ClusterVolumes(
        api_client or kubernetes_api(settings.kube, settings.kubeconfig),
        node=settings.node_name,
        pods_dir=settings.kubelet_pods_dir,
        roots=settings.roots,
    )


def main() -> None:
    try:
        settings = load(SnapshotterSettings)
    except InvalidSettings as error:
        sys.exit(f"rok-snapshotter: {error}")
    build(settings).run()
