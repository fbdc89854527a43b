"""Liveness and readiness that check what a service needs, served over HTTP for Kubernetes probes.

A service registers named async checks on one :class:`Health`; a check passes by returning and fails by raising
(its message is the reason). Readiness runs every check; liveness only those registered ``live=True``, the
ones that fail when the process is wedged rather than when a dependency is down (a NATS connection closed for
good, not one that is reconnecting), so that Kubernetes restarts a process only when a restart can help::

    health = Health()
    health.add("database", db.ping)
    health.add("store", cached(store.reachable, seconds=10))

``GET /livez`` and ``GET /readyz`` answer 200 or 503 with a JSON body naming each check and, for a failing
one, why: ``{"status": "failing", "failing": ["database"], "checks": {"nats": "ok", "database": "…"}}``.
Probes make no spans: the checks create none of their own and run with OpenTelemetry's instrumentation suppressed,
and web servers leave :data:`PROBE_PATHS` untraced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from rokcommon.streams import ConsumerSpec

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[object]]

PROBE_PATHS = frozenset({"/livez", "/readyz", "/healthz"})  # what a web server traces no request of
CHECK_TIMEOUT = 3.0  # seconds; below the probes' default timeoutSeconds of the manifests (5)


@dataclass(frozen=True)
class Report:
    """The outcome of one probe: every check by name, ``"ok"`` or the reason it failed."""

    checks: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(outcome == "ok" for outcome in self.checks.values())

    @property
    def status_code(self) -> int:
        return 200 if self.ok else 503

    def body(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "failing",
            "failing": sorted(name for name, outcome in self.checks.items() if outcome != "ok"),
            "checks": self.checks,
        }


@dataclass
class Health:
    """The named checks of one process; :meth:`live` and :meth:`ready` run them."""

    timeout: float = CHECK_TIMEOUT
    _checks: dict[str, tuple[Check, bool]] = field(default_factory=dict)

    def add(self, name: str, check: Check, *, live: bool = False) -> None:
        """Register ``check`` for readiness (and liveness too with ``live=True``); a name is registered once."""
        self._checks[name] = (check, live)

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def live(self) -> Report:
        return await self._run([n for n, (_, live) in self._checks.items() if live])

    async def ready(self) -> Report:
        return await self._run(list(self._checks))

    async def _run(self, names: list[str]) -> Report:
        token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            outcomes = await asyncio.gather(*(self._one(name) for name in names))
        finally:
            otel_context.detach(token)
        return Report(dict(zip(names, outcomes, strict=True)))

    async def _one(self, name: str) -> str:
        check, _ = self._checks[name]
        try:
            await asyncio.wait_for(check(), self.timeout)
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except Exception as error:
            return str(error) or type(error).__name__
        return "ok"


def cached(check: Check, *, seconds: float) -> Check:
    """``check``, asked at most once every ``seconds``: its last outcome (pass or failure) is repeated meanwhile.

    For checks that cost a request to a remote service (the object store), so that probes of many pods do not
    add up to load of their own.
    """
    last: tuple[float, BaseException | None] | None = None
    lock = asyncio.Lock()

    async def checked() -> None:
        nonlocal last
        async with lock:
            now = time.monotonic()
            if last is None or now - last[0] >= seconds:
                try:
                    await check()
                except Exception as failure:
                    last = (now, failure)
                else:
                    last = (now, None)
            outcome = last[1]
        if outcome is not None:
            raise outcome

    return checked


class CheckFailed(Exception):
    """A check's failure, with the reason a person reads in the probe's body."""


def nats_checks(health: Health, connection: Callable[[], Any]) -> None:
    """The NATS connection's checks: ``nats`` (ready: connected; live: not closed for good).

    ``connection`` returns the nats-py client (or None before it exists). A client that is reconnecting is
    alive but not ready; one that is closed never comes back, so the process is wedged.
    """

    async def connected() -> None:
        nc = connection()
        if nc is None or not nc.is_connected:
            state = "not connected yet" if nc is None else ("closed" if nc.is_closed else "reconnecting")
            raise CheckFailed(f"NATS connection {state}")

    async def not_closed() -> None:
        nc = connection()
        if nc is not None and nc.is_closed:
            raise CheckFailed("NATS connection closed for good")

    health.add("nats", connected)
    health.add("nats-open", not_closed, live=True)


def consumer_checks(
    health: Health, broker: Any, consumers: Mapping[str, ConsumerSpec], js: Callable[[], JetStreamContext]
) -> None:
    """``consumers``: every subscriber of ``broker`` runs, and JetStream still holds each durable consumer.

    Asking the server for each consumer's info is what proves JetStream answers and the consumer was not
    deleted under the service (a pull subscriber of a deleted consumer would wait for ever).
    """
    from nats.js.errors import NotFoundError

    async def info(spec: ConsumerSpec) -> None:
        try:
            await js().consumer_info(spec.stream.name, spec.durable, timeout=health.timeout / 2)
        except NotFoundError:
            raise CheckFailed(f"consumer {spec.durable} of stream {spec.stream.name} does not exist") from None
        except Exception as error:
            raise CheckFailed(
                f"JetStream did not answer for consumer {spec.durable}: {error or type(error).__name__}"
            ) from None

    async def bound() -> None:
        idle = [str(getattr(s, "subject", s)) for s in broker.subscribers if not s.running]
        if idle or not broker.subscribers:
            raise CheckFailed(f"not consuming yet: {', '.join(idle) or 'no subscriber started'}")
        await asyncio.gather(*(info(spec) for spec in consumers.values()))

    health.add("consumers", bound)


class HealthServer:
    """``/livez`` and ``/readyz`` (and ``/healthz``, the same as ``/livez``) on a small aiohttp server."""

    def __init__(self, health: Health, host: str, port: int) -> None:
        self.health = health
        self.host = host
        self.requested_port = port
        self._runner: Any = None

    @property
    def port(self) -> int:
        """The bound port (the system's choice when 0 was asked for)."""
        if self._runner is not None and self._runner.addresses:
            return int(self._runner.addresses[0][1])
        return self.requested_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        from aiohttp import web

        async def answer(report: Report) -> web.Response:
            return web.json_response(report.body(), status=report.status_code)

        async def livez(_: web.Request) -> web.Response:
            return await answer(await self.health.live())

        async def readyz(_: web.Request) -> web.Response:
            return await answer(await self.health.ready())

        app = web.Application()
        app.router.add_get("/livez", livez)
        app.router.add_get("/healthz", livez)
        app.router.add_get("/readyz", readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.requested_port).start()
        log.info("health probes on %s/livez and /readyz", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
