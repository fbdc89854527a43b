"""Recording in batches: a durable pull consumer whose waiting messages are recorded several per transaction.

A transaction costs the same few round trips and one flush to disk whether it records one event or two hundred,
and a message handled on its own costs more than its recording. So the registry pulls what waits on a stream (up
to :attr:`BatchConsumer.size` messages: under load, those that arrived while the last batch was recorded; when
quiet, the one that just came), records them in one transaction, then publishes what they made whole, all at
once, and acks each message. The next batch is recorded meanwhile.

- A message is acked only once the transaction holding its event has committed and its announcements were
  published. A crash before that leaves it unacked: it is redelivered after ``ack_wait`` and recorded again to
  the same rows (the recorder upserts on natural keys; announcements carry deterministic ids).
- A message that cannot be decoded, or whose event cannot be recorded, fails alone (the recorder then records
  each event of the batch in a transaction of its own), and goes through the service's failure policy: dead-
  lettered and terminated if retrying cannot help, nak'ed with a growing delay otherwise, dead-lettered after
  ``max_deliver`` deliveries.
- The batches of one stream are recorded one after the other, and the events of one run in a batch in the order
  they were delivered.
- Each message keeps its own trace: a consumer span per message, a child of the context its headers carry, with
  its announcements; each trace in the batch shows the commit (a ``registry db commit`` span over the
  transaction, under the first of its messages).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.js import JetStreamContext
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from rokcommon import bus
from rokcommon.events import Event, model_for_subject
from rokcommon.logs import current_event_id
from rokcommon.streams import ConsumerSpec
from rokcommon.telemetry import event_attributes

from rok_registry.settling import Commit

log = logging.getLogger(__name__)
tracer = trace.get_tracer("rok_registry")

Outcomes = list[list[Commit] | Exception]  # per event, in order: what it announces, or why it failed
RecordBatch = Callable[[Sequence[Event]], Awaitable[Outcomes]]
Announce = Callable[[list[Commit]], Awaitable[None]]
Failed = Callable[[Msg, Exception], Awaitable[float | None]]  # the failure policy: None (terminate) or a nak delay

FETCH_WAIT = 0.5  # seconds a pull waits for a first message (how long a stop may wait for the pull to end)


@dataclass
class Delivery:
    """One message of a batch: its event (or why it has none), its span, and what it announces once committed."""

    msg: Msg
    span: Span
    event: Event | None = None
    error: Exception | None = None
    commits: list[Commit] = field(default_factory=list)


class BatchConsumer:
    """Pull a durable consumer's messages in batches of at most ``size``; record each batch in one transaction.

    ``record``: records events in one transaction, an outcome per event (the recorder's ``record_batch``);
    ``announce``: publishes one message's commits; ``failed``: the failure policy for a message that failed;
    ``in_flight``: batches recorded and still being announced and acked, at most.
    """

    def __init__(
        self,
        spec: ConsumerSpec,
        record: RecordBatch,
        announce: Announce,
        failed: Failed,
        *,
        size: int = 256,
        in_flight: int = 4,
        inbox_prefix: bytes | None = None,
        db_system: str = "",
    ) -> None:
        self.spec = spec
        self.record = record
        self.announce = announce
        self.failed = failed
        self.size = size
        self.inbox_prefix = inbox_prefix
        self.db_system = db_system
        self._slots = asyncio.Semaphore(in_flight)
        self._finishing: set[asyncio.Task[None]] = set()
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, connection: Client) -> None:
        js = connection.jetstream()
        self._sub = await js.pull_subscribe_bind(
            durable=self.spec.durable, stream=self.spec.stream.name, inbox_prefix=self.inbox_prefix
        )
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"consume {self.spec.durable}")

    async def stop(self) -> None:
        """Pull no more; finish the batch being recorded and those being acked (the rest are redelivered)."""
        self._stopping = True
        if self._task is not None:
            await asyncio.wait([self._task])
        if self._finishing:
            await asyncio.wait(self._finishing)
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as error:  # the connection went first: the server forgets the subscription anyway
                log.debug("unsubscribing %s: %s", self.spec.durable, error)
            self._sub = None

    async def _run(self) -> None:
        assert self._sub is not None
        while not self._stopping:
            try:
                msgs = await self._sub.fetch(self.size, timeout=FETCH_WAIT)
            except TimeoutError:
                continue
            except ConnectionClosedError:
                await asyncio.sleep(FETCH_WAIT)  # the service stops (or is stopped) for good
                continue
            except Exception as error:  # a reconnect under way, JetStream answering late: pull again
                log.warning("pulling from %s failed: %s", self.spec.durable, error or type(error).__name__)
                await asyncio.sleep(FETCH_WAIT)
                continue
            await self._slots.acquire()
            try:
                deliveries = await self.record_all(msgs)
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.get_running_loop().create_task(self.finish(deliveries))
            self._finishing.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._finishing.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("finishing a batch of %s failed", self.spec.durable, exc_info=task.exception())

    async def record_all(self, msgs: Sequence[Msg]) -> list[Delivery]:
        """Decode and record a batch of messages; each delivery holds its commits or its error."""
        pulled = time.time_ns()
        deliveries = [self._delivery(msg, pulled) for msg in msgs]
        recorded = [d for d in deliveries if d.event is not None]
        began = time.time_ns()
        try:
            outcomes = await self.record([d.event for d in recorded if d.event is not None])
        except Exception as error:  # a fault of the batch itself: each message fails with it
            outcomes = [error] * len(recorded)
        ended = time.time_ns()
        traced: set[int] = set()  # the traces that show the commit already (messages of one step share one)
        for delivery, outcome in zip(recorded, outcomes, strict=True):
            if isinstance(outcome, Exception):
                delivery.error = outcome
                continue
            delivery.commits = outcome
            trace_id = delivery.span.get_span_context().trace_id
            if trace_id in traced:
                continue
            traced.add(trace_id)
            commit = tracer.start_span(
                "registry db commit",
                context=trace.set_span_in_context(delivery.span),
                kind=SpanKind.CLIENT,
                attributes={"db.system": self.db_system, "rok.batch.events": len(recorded)},
                start_time=began,
            )
            commit.end(end_time=ended)
        return deliveries

    def _delivery(self, msg: Msg, pulled: int) -> Delivery:
        headers = msg.headers or {}
        event: Event | None = None
        error: Exception | None = None
        try:
            event = model_for_subject(msg.subject).decode(msg.data)
        except Exception as invalid:
            error = invalid
        span = tracer.start_span(
            f"registry record {type(event).__name__ if event else 'message'}",
            context=propagate.extract(headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": msg.subject,
                "messaging.consumer.group.name": self.spec.durable,
                "messaging.message.id": headers.get(bus.MSG_ID, ""),
                **({"rok.event": type(event).__name__, **event_attributes(event)} if event else {}),
            },
            start_time=pulled,
        )
        return Delivery(msg, span, event, error)

    async def finish(self, deliveries: Sequence[Delivery]) -> None:
        """Announce what each message's event made whole and ack it; a failed one goes to the failure policy."""
        await asyncio.gather(*(self._finish(d) for d in deliveries))

    async def _finish(self, delivery: Delivery) -> None:
        token = current_event_id.set((delivery.msg.headers or {}).get(bus.MSG_ID))
        try:
            with trace.use_span(delivery.span, end_on_exit=True):
                try:
                    if delivery.error is not None:
                        raise delivery.error
                    await self.announce(delivery.commits)
                    await delivery.msg.ack()
                except Exception as error:
                    delivery.span.record_exception(error)
                    delivery.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                    await self._fail(delivery.msg, error)
        finally:
            current_event_id.reset(token)

    async def _fail(self, msg: Msg, error: Exception) -> None:
        try:
            delay = await self.failed(msg, error)
            if delay is None:
                await msg.term()
            else:
                await msg.nak(delay=delay)
        except Exception as failure:  # not even dead-lettered: JetStream redelivers it after ack_wait
            log.error("handling the failure of a message of %s failed: %s", self.spec.durable, failure)
