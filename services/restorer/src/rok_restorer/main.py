"""The restorer's composition root: settings → service, registry client, outcome store, targets → consumer;
the responder that answers full diffs of two versions, and the one that looks inside versions."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from functools import partial

from rokcommon.authz import access_for
from rokcommon.health import cached
from rokcommon.service import Service
from rokstore import open_repository

from rok_restorer import browse, diffs, handlers
from rok_restorer.authority import Authority
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
    # restores go under the roots, and a local run's clones under the state directory's runs/
    authority = Authority(access_for(settings), (*settings.roots, settings.state_dir / "runs"))
    handlers.register(service, restorer, settings, authority)
    catalog = RegistryCatalog(lambda: service.broker.connection, timeout=settings.registry_timeout)
    diffs.register(service, diffs.Differ(catalog, cache_dir=settings.state_dir / "cache"))
    browser = browse.Browser(catalog, authority, cache_dir=settings.state_dir / "cache")
    browse.register(service, browser)
    service.app.after_shutdown(browser.close)
    service.health.add(
        "store", cached(partial(store_reachable, settings.repository_url), seconds=settings.health_cache)
    )
    return service


async def store_reachable(url: str) -> None:
    """This cluster's repository (``ROK_REPOSITORY``) answers: its config object is read (and closed again, so
    that a probe holds no client between its asks)."""
    repo = await open_repository(url)
    await repo.close()


def main() -> None:
    build().run()
