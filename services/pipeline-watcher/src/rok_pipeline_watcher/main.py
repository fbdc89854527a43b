"""The pipeline-watcher's composition root: settings → bus → sources (Kubernetes, webhook) → run until SIGTERM.

``python -m rok_pipeline_watcher`` runs it. With ``ROK_KUBE=incluster`` (or ``kubeconfig``) it watches KFP
runs in the cluster; with ``ROK_WEBHOOK=true`` it also serves the step guard's admission webhook. Locally
(``ROK_KUBE=off``, the default) it has nothing to watch: the local runner (``rok run``) translates and
publishes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from datetime import timedelta
from functools import partial
from typing import Any

from nats.js import JetStreamContext
from rokcommon import bus, kube
from rokcommon.events import Event
from rokcommon.health import CheckFailed, Health, HealthServer, nats_checks
from rokcommon.logs import setup_logging
from rokcommon.settings import InvalidSettings, load
from rokcommon.streams import ensure_streams
from rokcommon.telemetry import instruments, setup_telemetry

from rok_pipeline_watcher.settings import WatcherSettings

log = logging.getLogger(__name__)


async def serve(
    settings: WatcherSettings,
    stop: asyncio.Event,
    *,
    api_client: Any = None,
    ready: asyncio.Event | None = None,
    health: Health | None = None,
) -> None:
    """Run until ``stop`` is set; ``ready`` is set once every source has caught up (its first lists published).

    ``api_client`` overrides how the Kubernetes API is reached (tests); ``health`` receives the checks (NATS,
    JetStream, the Kubernetes API), served on ``ROK_HEALTH_PORT`` when that is set.
    """
    health = health or Health()
    lost = asyncio.Event()
    stopping = False

    async def closed() -> None:
        if not stopping:
            lost.set()

    nc = await bus.connect(settings, name="rok-pipeline-watcher", closed_cb=closed)
    js = nc.jetstream()
    await ensure_streams(js, replicas=settings.stream_replicas)
    nats_checks(health, lambda: nc)
    health.add("jetstream", partial(jetstream_answers, js))

    published = instruments("rok.pipeline-watcher")

    async def publish(event: Event) -> None:
        ack = await bus.publish(js, event)
        kind = {"event": type(event).__name__, "duplicate": str(ack.duplicate).lower()}
        published.add("rok.watcher.events.published", 1, kind)

    tasks: list[asyncio.Task[Any]] = []
    cleanups: list[Any] = []
    waits: list[Any] = []
    if settings.kube != "off" or api_client is not None:
        from rok_pipeline_watcher.kfp_api import KfpApi
        from rok_pipeline_watcher.kube_source import KubeSource

        api_client = api_client or kube.api_client(settings.kube, settings.kubeconfig)
        health.add("kubernetes", partial(kubernetes_answers, api_client))
        kfp = KfpApi(settings.kfp_api_url, timeout=settings.kfp_api_timeout, token_file=settings.kfp_api_token_file)
        source = KubeSource(
            api_client,
            publish,
            kfp=kfp,
            namespace=settings.watch_namespace,
            watch_timeout=settings.watch_timeout,
            retry_delay=settings.retry_delay or 1.0,
        )
        from rok_pipeline_watcher.clone_retention import CloneRetention

        retention = CloneRetention(
            api_client,
            lambda: source.workflows.values(),
            keep=timedelta(hours=settings.clone_retention_hours),
            namespace=settings.watch_namespace,
        )
        sweeps = retention.run(source.ready, settings.clone_sweep_seconds)
        if settings.leader_election:
            # Only the leader watches and publishes; a replica that loses the Lease stops (and is restarted).
            from rok_pipeline_watcher.leader import LeaderElection

            election = LeaderElection(
                api_client, name=settings.lease_name, namespace=settings.lease_namespace, identity=settings.pod_name
            )
            tasks.append(asyncio.create_task(election.run(), name="leader-election"))
            tasks.append(asyncio.create_task(_when(election.acquired, source.run()), name="kubernetes-source"))
            tasks.append(asyncio.create_task(_when(election.acquired, sweeps), name="clone-retention"))
        else:
            tasks.append(asyncio.create_task(source.run(), name="kubernetes-source"))
            tasks.append(asyncio.create_task(sweeps, name="clone-retention"))
            waits.append(source.ready.wait())
        cleanups.append(kfp.close)
    if settings.webhook:
        from rokcommon.permissions import GUARD

        from rok_pipeline_watcher.guard.admission import GuardConfig
        from rok_pipeline_watcher.guard.webhook import start

        config = GuardConfig(
            image=settings.guard_image,
            nats_url=settings.nats_url,
            before_timeout=settings.guard_before_timeout,
            after_timeout=settings.guard_after_timeout,
            nats_user=GUARD if settings.guard_nats_password.get_secret_value() else "",
            nats_password=settings.guard_nats_password.get_secret_value(),
        )
        runner = await start(
            config, settings.webhook_host, settings.webhook_port, settings.webhook_cert, settings.webhook_key
        )
        cleanups.append(runner.cleanup)

    if settings.health_port is not None:
        probes = HealthServer(health, settings.health_host, settings.health_port)
        await probes.start()
        cleanups.append(probes.stop)

    async def announce() -> None:
        await asyncio.gather(*waits)
        log.info(
            "ready",
            extra={"kube": settings.kube, "namespace": settings.watch_namespace or "*", "webhook": settings.webhook},
        )
        if ready is not None:
            ready.set()

    helpers: list[asyncio.Task[Any]] = [
        asyncio.create_task(announce()),
        asyncio.create_task(stop.wait()),
        asyncio.create_task(lost.wait()),
    ]
    try:
        await asyncio.wait([*helpers[1:], *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                task.result()  # a source that died: say why
        if lost.is_set():
            raise bus.BusConnectionLost(f"the NATS connection closed for good: {nc.last_error or 'by the server'}")
    finally:
        stopping = True
        log.info("stopping")
        for task in [*helpers, *tasks]:
            task.cancel()
        for task in [*helpers, *tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for cleanup in cleanups:
            await cleanup()
        if not nc.is_closed:
            await nc.drain()


async def jetstream_answers(js: JetStreamContext) -> None:
    """JetStream answers this account's requests (what every publish needs)."""
    try:
        await js.account_info()
    except Exception as error:
        raise CheckFailed(f"JetStream does not answer: {error or type(error).__name__}") from None


async def kubernetes_answers(api_client: Any) -> None:
    """``GET /version`` of the API server answers (any authenticated client may ask it, no RBAC rule needed)."""
    from kubernetes import client

    host = api_client.configuration.host
    try:
        await asyncio.to_thread(client.VersionApi(api_client).get_code, _request_timeout=2)
    except Exception as error:
        reason = str(getattr(error, "reason", "") or error).splitlines()[0][:200]
        raise CheckFailed(f"the Kubernetes API at {host} does not answer: {reason}") from None


async def _when(event: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` once ``event`` is set (closing it unstarted if cancelled before)."""
    try:
        await event.wait()
    except asyncio.CancelledError:
        work.close()
        raise
    await work


def main() -> None:
    try:
        settings = load(WatcherSettings)
    except InvalidSettings as error:
        sys.exit(f"rok-pipeline-watcher: {error}")
    setup_logging("pipeline-watcher", level=settings.log_level, fmt=settings.log_format)
    telemetry = setup_telemetry("pipeline-watcher")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(run())
    except bus.BusConnectionLost as error:
        log.critical("%s; exiting to be restarted", error)
        sys.exit(bus.EXIT_BUS_LOST)
    finally:
        telemetry.shutdown()
