"""Following facts on the bus: wait until a given event (a committed version, a restore's outcome) exists.

The one way to wait for a fact: the local runner and a step guard wait for commits (:func:`commits`), and
``rok restore``, the web page and the runner's clone wait for a restore's outcome (:func:`restores`, and
:func:`rokcommon.restores.request_restore` on top of it).

A :class:`Follower` reads a subject of a JetStream stream with an ordered consumer (no durable state,
nothing to clean up) from a start time on, decodes each event, and resolves whoever waits for one of its keys.
An event that arrived before anyone waited for it is remembered, so the order of "wait" and "arrive"
does not matter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from rokcommon import streams, subjects
from rokcommon.errors import InvalidEvent
from rokcommon.events import Event, RestoreCompleted, RestoreFailed, VersionCommitted

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

RESTORE_OUTCOMES = "rok.restore.*.v1"  # completed and failed; the requests it also matches are skipped


class Follower(Generic[E]):
    def __init__(
        self,
        js: JetStreamContext,
        subject: str,
        models: tuple[type[E], ...],
        keys: Callable[[E], Iterable[Hashable]],
        *,
        since: datetime | None = None,
        stream: str | None = None,
    ) -> None:
        self._js, self._subject, self._models, self._keys = js, subject, models, keys
        self._since, self._stream = since, stream
        self._found: dict[Hashable, E] = {}
        self._waiters: dict[Hashable, list[asyncio.Future[E]]] = {}
        self._subscription: object | None = None

    async def start(self) -> None:
        if self._since is None:
            policy, config = DeliverPolicy.NEW, None
        else:
            policy, config = DeliverPolicy.BY_START_TIME, ConsumerConfig(opt_start_time=self._since)
        self._subscription = await self._js.subscribe(
            self._subject,
            cb=self._on_message,
            ordered_consumer=True,
            deliver_policy=policy,
            config=config,
            stream=self._stream,
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()  # type: ignore[attr-defined]
            self._subscription = None

    async def __aenter__(self) -> Follower[E]:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _on_message(self, msg: Msg) -> None:
        event: E | None = None
        for model in self._models:
            if msg.subject.startswith(model.subject):
                try:
                    event = model.decode(msg.data)
                except InvalidEvent as error:
                    log.warning("ignoring an invalid event on %s: %s", msg.subject, error)
                    return
        if event is None:
            return
        for key in self._keys(event):
            self._found.setdefault(key, event)
            for waiter in self._waiters.pop(key, []):
                if not waiter.done():
                    waiter.set_result(event)

    def get(self, key: Hashable) -> E | None:
        return self._found.get(key)

    async def wait(self, key: Hashable, timeout: float | None) -> E | None:
        """The event with ``key``, once it exists; None when ``timeout`` seconds pass first."""
        if key in self._found:
            return self._found[key]
        future: asyncio.Future[E] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(key, [])
            if future in waiters:
                waiters.remove(future)


def commits(js: JetStreamContext, *, since: datetime | None = None) -> Follower[VersionCommitted]:
    """Follow ``VersionCommitted``; wait on a :class:`~rokcommon.versions.VersionKey`, or on its
    :attr:`~rokcommon.versions.VersionKey.of_node` when only the workflow node is known (a step guard)."""
    return Follower(js, subjects.VERSION_COMMITTED, (VersionCommitted,), lambda e: (e.key, e.key.of_node), since=since)


def restores(js: JetStreamContext, *, since: datetime | None = None) -> Follower[RestoreCompleted | RestoreFailed]:
    """Follow the outcomes of restores (completed or failed); wait on the request id."""
    return Follower(
        js,
        RESTORE_OUTCOMES,
        (RestoreCompleted, RestoreFailed),
        lambda e: (e.request_id,),
        since=since,
        stream=streams.RESTORES.name,
    )


def an_hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)
