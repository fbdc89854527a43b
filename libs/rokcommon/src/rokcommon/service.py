"""A rok service on FastStream: one broker, durable JetStream consumers with an explicit failure policy.

A service's composition root does::

    service = Service("snapshotter", settings)

    @service.consumer(SNAPSHOTTER_CONSUMER, max_workers=4)
    async def on_step(event: StepStarted, msg: NatsMessage) -> None: ...

    service.run()

A consumer's payload is decoded once, into the model its subject carries (:func:`decode_event`), and handed
to the handler as its first parameter, so a handler is typed by the event it takes and never parses the
payload itself.

Every consumer acks explicitly and decides each failure on purpose (docs/events.md):

- the handler returns → ack;
- :class:`~rokcommon.errors.PermanentError` or an invalid payload (bad JSON, unknown field, unsupported
  ``schema_version``) → the message is dead-lettered with the reason and terminated;
- :class:`~rokcommon.errors.TemporaryError` or any unexpected exception → nak with a growing delay, until the
  last allowed delivery, which is dead-lettered with the last error as its reason;
- the process dies or hangs → JetStream redelivers after ``ack_wait``; once ``max_deliver`` is exhausted the
  server's advisory is forwarded to the dead-letter stream with the original payload.

A lost connection to NATS is re-established for ever (:attr:`Service.connected` says meanwhile whether it is
up); a connection closed for good (the server refused the client) ends :meth:`Service.run` with a non-zero
exit, so that the supervisor starts the service again, instead of a process that looks alive but hears nothing.
Every reply a handler returns is measured against the server's ``max_payload`` before it is sent.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from faststream import FastStream
from faststream._internal.middlewares import BaseMiddleware
from faststream.exceptions import HandlerException, NackMessage, RejectMessage
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsMessage, PullSub
from faststream.security import SASLPlaintext
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from rokcommon import bus, credentials, payloads, streams
from rokcommon.broker import ServiceBroker
from rokcommon.broker_telemetry import nats_telemetry
from rokcommon.bus import EXIT_BUS_LOST, BusConnectionLost
from rokcommon.errors import PermanentError, TemporaryError
from rokcommon.events import Event, invalid_event, model_for_subject
from rokcommon.health import Health, HealthServer, consumer_checks, nats_checks
from rokcommon.logs import current_event_id, setup_logging
from rokcommon.settings import RokSettings
from rokcommon.streams import ConsumerSpec
from rokcommon.telemetry import annotate_current_span, instruments, setup_telemetry

log = logging.getLogger(__name__)


class Service:
    """What every rok service is made of: settings, telemetry, logging, a broker and its consumers."""

    def __init__(self, name: str, settings: RokSettings, *, graceful_timeout: float = 30.0) -> None:
        self.name = name
        self.settings = settings
        setup_logging(name, level=settings.log_level, fmt=settings.log_format)
        self.telemetry = setup_telemetry(name)
        self.instruments = instruments(f"rok.{name}")
        self.consumers: dict[str, ConsumerSpec] = {}
        # pull subscriptions take their inbox prefix from the subscriber, not the connection
        self._inbox_prefix = f"{credentials.connect_options(settings).get('inbox_prefix', '_INBOX')}.".encode()
        self.lost: str | None = None  # why the connection closed for good, once it did
        self.broker = ServiceBroker(
            settings.nats_servers,
            name=f"rok-{name}",
            max_reconnect_attempts=-1,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
            closed_cb=self._closed,
            graceful_timeout=graceful_timeout,
            **_broker_credentials(settings),
            middlewares=(
                nats_telemetry(self.telemetry),
                self._failure_policy,
            ),
            logger=logging.getLogger(f"rok.{name}.broker"),
        )
        self.app = FastStream(self.broker, logger=logging.getLogger(f"rok.{name}"))
        # /livez and /readyz: the bus and the consumers here; each composition root adds what else it needs
        self.health = Health()
        nats_checks(self.health, self._connection)
        consumer_checks(self.health, self.broker, self.consumers, lambda: self.js)
        self.health_server: HealthServer | None = None
        if settings.health_port is not None:
            self.health_server = HealthServer(self.health, settings.health_host, settings.health_port)
            self.app.on_startup(self.health_server.start)
            self.app.after_shutdown(self.health_server.stop)
        self.app.on_startup(self.declare)
        self.app.after_startup(self._ready)
        self.app.on_shutdown(self._stopping)

    # --- consumers ----------------------------------------------------------------------------------------

    def consumer_spec(self, stream: streams.StreamSpec, durable: str, filter_subject: str, **kw: Any) -> ConsumerSpec:
        """A consumer spec with this service's delivery settings (max deliveries, ack wait)."""
        s = self.settings
        return ConsumerSpec(
            stream=stream,
            durable=durable,
            filter_subject=filter_subject,
            max_deliver=kw.pop("max_deliver", s.max_deliver),
            ack_wait=kw.pop("ack_wait", s.ack_wait),
            **kw,
        )

    def consumer(
        self, spec: ConsumerSpec, *, max_workers: int = 1, batch_size: int | None = None
    ) -> Callable[[Callable[..., Any]], Any]:
        """Subscribe a handler to a durable pull consumer, and forward its exhausted messages to the DLQ.

        ``batch_size`` (default ``max_workers``) is how many messages one pull asks for. A consumer whose
        ``max_ack_pending`` is as small as its workers wants 1: a pull for more than the server may hand out
        waits for its timeout before returning what it has.
        """
        self.declare_consumer(spec)
        return self.broker.subscriber(
            spec.filter_subject,
            stream=JStream(spec.stream.name, declare=False),
            durable=spec.durable,
            config=spec.config(),
            pull_sub=PullSub(batch_size=batch_size or max(1, max_workers), timeout=1.0),
            max_workers=max_workers,
            ack_policy=AckPolicy.ACK,
            decoder=decode_event,
            inbox_prefix=self._inbox_prefix,
        )

    def declare_consumer(self, spec: ConsumerSpec) -> None:
        """Declare a durable consumer (created at start) and forward its exhausted messages to the DLQ, for a
        consumer that pulls its messages itself rather than through :meth:`consumer`."""
        self.consumers[spec.durable] = spec
        self._forward_dead_letters(spec)

    def _forward_dead_letters(self, spec: ConsumerSpec) -> None:
        advisory = ConsumerSpec(
            stream=streams.ADVISORIES,
            durable=f"{spec.durable}-dlq",
            filter_subject=bus.advisory_filter(spec.stream.name, spec.durable),
            max_deliver=10,
            ack_wait=30.0,
        )
        self.consumers[advisory.durable] = advisory

        @self.broker.subscriber(
            advisory.filter_subject,
            stream=JStream(advisory.stream.name, declare=False),
            durable=advisory.durable,
            config=advisory.config(),
            pull_sub=PullSub(batch_size=1, timeout=1.0),
            ack_policy=AckPolicy.ACK,
            inbox_prefix=self._inbox_prefix,
        )
        async def forward(msg: NatsMessage) -> None:
            await bus.forward_max_deliveries(self.js, msg.raw_message)
            self.instruments.add("rok.bus.dead_letters", 1, {"consumer": spec.durable})

    def _connection(self) -> Any:
        try:
            return self.broker.connection
        except Exception:  # FastStream's "not connected yet" state raises on access
            return None

    @property
    def inbox_prefix(self) -> bytes:
        """The prefix of this service's pull subscriptions' inboxes (its NATS user may only read those)."""
        return self._inbox_prefix

    @property
    def js(self) -> JetStreamContext:
        """JetStream on the broker's own connection (for dead letters and raw publishes)."""
        return self.broker.connection.jetstream()

    async def publish(self, event: Event) -> None:
        """Publish an event on the broker's connection, de-duplicated by its id, in the current trace."""
        await bus.publish(self.js, event)

    async def declare(self) -> None:
        """Create the streams and this service's consumers (idempotent) before any subscriber binds."""
        nc = await bus.connect(self.settings, name=f"rok-{self.name}-declare")
        try:
            js = nc.jetstream()
            await streams.ensure_streams(js, replicas=self.settings.stream_replicas)
            for spec in self.consumers.values():
                await streams.ensure_consumer(js, spec)
        finally:
            await nc.close()

    # --- the connection ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the broker's connection to NATS is up now (for readiness): False before it connects, while
        it reconnects, and once it closed."""
        return self.broker.connected

    async def _disconnected(self) -> None:
        if self.broker.running:
            log.warning("%s lost its NATS connection; reconnecting", self.name)

    async def _reconnected(self) -> None:
        log.info("%s reconnected to NATS", self.name)

    async def _closed(self) -> None:
        """nats-py gave the connection up (the server closed it with an error): stop, so that run() fails."""
        if not self.broker.running:
            return  # our own shutdown drained it
        self.lost = f"{self.broker.last_error or 'closed by the server'}"
        log.error("%s: the NATS connection closed for good (%s); exiting to be restarted", self.name, self.lost)
        self.app.exit()

    async def _ready(self) -> None:
        log.info("%s ready", self.name, extra={"consumers": ",".join(self.consumers)})

    async def _stopping(self) -> None:
        log.info("%s stopping: finishing in-flight messages, leaving the rest for redelivery", self.name)

    # --- failure policy -----------------------------------------------------------------------------------

    def _failure_policy(self, msg: Any, **kwargs: Any) -> BaseMiddleware:
        return _FailurePolicy(msg, service=self, **kwargs)

    async def failed(self, raw: Msg, error: Exception) -> float | None:
        """Apply the failure policy to a consumed message whose handling raised ``error``: ``None`` if it was
        dead-lettered (terminate it), else the delay in seconds to nak it with."""
        meta = raw.metadata
        spec = self.consumers.get(meta.consumer)
        max_deliver = spec.max_deliver if spec else self.settings.max_deliver
        if isinstance(error, ValidationError):
            await self._dead_letter(raw, str(invalid_event(_model_name(error), error)))
            return None
        if isinstance(error, PermanentError):
            await self._dead_letter(raw, str(error))
            return None
        delay = error.delay if isinstance(error, TemporaryError) else self.settings.retry_delay
        reason = f"{type(error).__name__}: {error}"
        if meta.num_delivered >= max_deliver:
            await self._dead_letter(raw, f"gave up after {meta.num_delivered} deliveries: {reason}")
            return None
        delay *= 2 ** (meta.num_delivered - 1)
        log.warning(
            "delivery %d of %d failed, retrying in %.1fs: %s",
            meta.num_delivered,
            max_deliver,
            delay,
            reason,
            exc_info=not isinstance(error, TemporaryError),
        )
        return delay

    async def _dead_letter(self, raw: Msg, reason: str) -> None:
        meta = raw.metadata
        await bus.dead_letter(
            self.js,
            payload=raw.data,
            subject=raw.subject,
            stream=meta.stream,
            consumer=meta.consumer,
            sequence=meta.sequence.stream,
            deliveries=meta.num_delivered,
            reason=reason,
            headers=raw.headers,
        )
        self.instruments.add("rok.bus.dead_letters", 1, {"consumer": meta.consumer})

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT; raise :class:`BusConnectionLost` if the connection closed for good."""
        try:
            await self.app.run()
        except Exception as error:
            if self.lost is None:
                raise
            raise BusConnectionLost(f"{self.name}: the NATS connection closed for good: {self.lost}") from error
        if self.lost is not None:
            raise BusConnectionLost(f"{self.name}: the NATS connection closed for good: {self.lost}")

    def run(self) -> None:
        """Run until SIGTERM or SIGINT; exit with :data:`EXIT_BUS_LOST` if the connection closed for good."""
        import asyncio

        try:
            asyncio.run(self.serve())
        except BusConnectionLost as error:
            log.critical("%s", error)
            sys.exit(EXIT_BUS_LOST)
        finally:
            self.telemetry.shutdown()


def _broker_credentials(settings: RokSettings) -> dict[str, Any]:
    """The broker's options for ``ROK_NATS_USER`` (FastStream takes user and password as its security)."""
    options = credentials.connect_options(settings)
    if not options:
        return {}
    return {
        "security": SASLPlaintext(username=options["user"], password=options["password"]),
        "inbox_prefix": options["inbox_prefix"],
    }


class _FailurePolicy(BaseMiddleware):
    def __init__(self, msg: Any, *, service: Service, **kwargs: Any) -> None:
        super().__init__(msg, **kwargs)
        self.service = service

    async def consume_scope(self, call_next: Callable[..., Any], msg: StreamMessage[Any]) -> Any:
        raw = msg.raw_message
        if not isinstance(raw, Msg) or not raw.reply or not raw.reply.startswith("$JS.ACK."):
            return await call_next(msg)  # core NATS (request-reply): nothing to ack
        token = current_event_id.set((raw.headers or {}).get(bus.MSG_ID))
        try:
            return await call_next(msg)
        except HandlerException:
            raise
        except Exception as error:
            delay = await self.service.failed(raw, error)
            raise (RejectMessage() if delay is None else NackMessage(delay=delay)) from error
        finally:
            current_event_id.reset(token)

    async def publish_scope(self, call_next: Callable[..., Any], cmd: Any) -> Any:
        """Measure a reply (or any publish through the broker) before it goes out; too large is an error here."""
        body = cmd.body if isinstance(cmd.body, bytes) else json.dumps(cmd.body, default=str).encode()
        headers = {"content-type": "application/json", **cmd.headers_to_publish()}
        payloads.check(self.service.broker.connection, cmd.destination, body, headers)
        return await call_next(cmd)


async def decode_event(msg: StreamMessage[Any]) -> Event:
    """The event a consumer's message carries, as the model of its subject.

    Every way the payload can be wrong (bad JSON, an unknown field, an unsupported ``schema_version``, a
    subject no event is published on) is an :class:`~rokcommon.errors.InvalidEvent` naming the reason, which
    the failure policy dead-letters.
    """
    event = model_for_subject(msg.raw_message.subject).decode(msg.body)
    annotate_current_span(event)  # rok.run_id, rok.step, rok.namespace on the consumer's span
    return event


class _Named:
    def __init__(self, name: str) -> None:
        self.__name__ = name


def _model_name(error: ValidationError) -> Any:
    return _Named(error.title)
