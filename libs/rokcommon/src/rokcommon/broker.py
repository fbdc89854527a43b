"""The FastStream NATS broker a service runs on, on a connection that cannot spin once it is closed for good.

FastStream's pull consumers fetch in a loop and retry at once when a fetch fails with ``ConnectionClosedError``.
nats-py raises it without ever yielding to the event loop, so after the server closed a connection for good
those loops spin at full CPU and starve everything else — the ``closed_cb`` that would stop the service included:
the process looks alive, hears nothing and never exits. On :class:`ServiceConnection` a call on a closed
connection first yields for a moment, so the callback runs and the service stops (and its supervisor restarts it).

A consumer that pulls its messages itself (a :class:`Loop`) starts with the broker, once it is connected, and stops
before it, while the connection is still up to ack what it finished.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Protocol

from faststream.nats import NatsBroker
from nats.aio.client import Client

CLOSED_PAUSE = 0.05  # seconds a call on a closed connection waits before it fails


class ServiceConnection(Client):
    """A nats-py client whose publishes (and so fetches) on a closed connection yield before they fail."""

    async def publish(
        self, subject: str, payload: bytes = b"", reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        if self.is_closed:
            await asyncio.sleep(CLOSED_PAUSE)
        await super().publish(subject, payload, reply, headers)


class Loop(Protocol):
    """Work that runs on the broker's connection from its start to its stop."""

    async def start(self, connection: Client) -> None: ...

    async def stop(self) -> None: ...


class ServiceBroker(NatsBroker):
    """A :class:`~faststream.nats.NatsBroker` whose connection is a :class:`ServiceConnection`, and which runs
    :attr:`loops` beside its subscribers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loops: list[Loop] = []

    async def start(self) -> None:
        await super().start()
        for loop in self.loops:
            await loop.start(self.connection)

    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        await asyncio.gather(*(loop.stop() for loop in self.loops))
        await super().stop(exc_type, exc_val, exc_tb)

    async def _connect(self) -> Client:
        connection = ServiceConnection()
        await connection.connect(**self._connection_kwargs)
        self.config.connect(connection)
        return connection

    @property
    def connected(self) -> bool:
        """Whether the connection is up now: False before it connects, while it reconnects, once it closed."""
        return self._connection is not None and self._connection.is_connected

    @property
    def last_error(self) -> Exception | None:
        """Why the connection last failed (nats-py keeps the server's error, e.g. a maximum payload violation)."""
        return self._connection.last_error if self._connection is not None else None
