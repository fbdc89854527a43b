"""The restorer's composition root: settings → service, registry client, outcome store, targets → consumer;
and the responder that answers full diffs of two versions."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path

from rokcommon.health import cached
from rokcommon.service import Service
from rokstore import Repository, open_repository

from rok_restorer import diffs, handlers
from rok_restorer.outcome_store import KvOutcomes
from rok_restorer.registry import RegistryCatalog
from rok_restorer.restoring import Restorer
from rok_restorer.settings import RestorerSettings
from rok_restorer.targets import TargetFactory, Targets

log = logging.getLogger(__name__)


def kubernetes_targets(settings: RestorerSettings) -> TargetFactory | None:
    """The Kubernetes side (new PVCs, new notebook servers), when ``rok_restorer.kubernetes`` is installed."""
    if importlib.util.find_spec("rok_restorer.kubernetes") is None:
        return None
    factory: TargetFactory | None = importlib.import_module("rok_restorer.kubernetes").kubernetes_targets(settings)
    return factory


def build(settings: RestorerSettings | None = None) -> Service:
    settings = settings or RestorerSettings()
    service = Service("restorer", settings)
    restorer = Restorer(
        RegistryCatalog(lambda: service.broker.connection, timeout=settings.registry_timeout),
        KvOutcomes(lambda: service.js, ttl=settings.restore_outcome_days * 24 * 3600),
        Targets(kubernetes=kubernetes_targets(settings)),
        parallel_volumes=settings.restore_parallel_volumes,
        cache_dir=settings.state_dir / "cache",
        meter=service.instruments,
    )
    handlers.register(service, restorer, settings)
    catalog = RegistryCatalog(lambda: service.broker.connection, timeout=settings.registry_timeout)
    diffs.register(service, diffs.Differ(catalog, cache_dir=settings.state_dir / "cache"))
    store = StoreProbe(settings.repository_url, cache_dir=settings.state_dir / "cache")
    service.health.add("store", cached(store.reachable, seconds=settings.health_cache))
    service.app.after_shutdown(store.close)
    return service


class StoreProbe:
    """Whether this cluster's repository (``ROK_REPOSITORY``) answers: opened once, then its config read again."""

    def __init__(self, url: str, *, cache_dir: Path) -> None:
        self.url = url
        self.cache_dir = cache_dir
        self._repo: Repository | None = None

    async def reachable(self) -> None:
        if self._repo is None:
            self._repo = await open_repository(self.url, cache_dir=self.cache_dir)
        await self._repo.read_config()

    async def close(self) -> None:
        if self._repo is not None:
            await self._repo.close()
            self._repo = None


def main() -> None:
    build().run()
