"""The registry's composition root: settings → database → recorder and queries → bus and HTTP."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

from rokcommon.authz import access_for
from rokcommon.credentials import web_token
from rokcommon.service import Service

from rok_registry import handlers
from rok_registry.api import create_app
from rok_registry.database import Database
from rok_registry.gate import Gate
from rok_registry.http_server import HttpServer
from rok_registry.policy import Policy
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rok_registry.retention import Retention
from rok_registry.settings import RegistrySettings


@dataclass
class Registry:
    settings: RegistrySettings
    service: Service
    db: Database
    recorder: Recorder
    queries: Queries
    http: HttpServer

    async def start_storage(self) -> None:
        """Migrate the database and serve HTTP (before the consumers bind, so queries answer at once)."""
        await self.db.migrate()
        await self.http.start()
        settle_heap()

    async def stop_storage(self) -> None:
        await self.http.stop()
        await self.db.close()


def build(settings: RegistrySettings | None = None, *, graceful_timeout: float = 30.0) -> Registry:
    settings = settings or RegistrySettings()
    service = Service("registry", settings, graceful_timeout=graceful_timeout)
    db = Database(settings.database)
    recorder, queries, retention = Recorder(db), Queries(db), Retention(db)
    handlers.subscribe(
        service,
        recorder,
        queries,
        workers=settings.registry_workers,
        batch=settings.registry_batch,
        retention=retention,
    )
    service.health.add("database", db.ping)
    app = create_app(
        queries,
        publish=service.publish,
        nats=lambda: service.broker.connection,
        settings=settings,
        health=service.health,
        gate=gate_for(settings),
        retention=retention,
        recorder=recorder,
    )
    http = HttpServer(app, settings.registry_host, settings.registry_port)
    registry = Registry(settings, service, db, recorder, queries, http)
    service.app.on_startup(registry.start_storage)
    service.app.on_shutdown(registry.http.stop)
    service.app.after_shutdown(registry.db.close)
    rules = settings.retention
    if rules is not None:  # ROK_RETENTION_KEEP_LAST / _KEEP_WITHIN: forget on its own, every ROK_RETENTION_INTERVAL s
        policy = Policy(retention, rules, settings.retention_interval)
        service.app.after_startup(policy.start)
        service.app.on_shutdown(policy.stop)
    return registry


def settle_heap() -> None:
    """Keep what starting made (modules, schemas, mappers: most of the heap) out of the collector's sight.

    A full collection would otherwise walk all of it, over 100 ms that a query in flight waits out.
    """
    gc.collect()
    gc.freeze()


def gate_for(settings: RegistrySettings, *, api_client: Any = None) -> Gate:
    """Local: the token in the state directory (made on first use); cluster: the Kubernetes API's reviews."""
    token = web_token(settings.state_dir) if settings.auth == "local" else ""
    access = access_for(settings, local_token=token, api_client=api_client)
    return Gate(access, header=settings.userid_header, prefix=settings.userid_prefix, hosts=settings.hosts)


def main() -> None:
    build().service.run()
