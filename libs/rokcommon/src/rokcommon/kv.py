"""A NATS key-value bucket opened on first use, and created then if it does not exist yet.

What a service keeps between deliveries of a message (the snapshotter's records of finished snapshots, the
restorer's claims and outcomes) lives in such a bucket, shared by every replica. Reading or writing it when NATS
cannot answer is a :class:`~rokcommon.errors.TemporaryError`, so the message is tried again later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from rokcommon import payloads
from rokcommon.errors import TemporaryError


class LazyBucket:
    """``jetstream`` gives the JetStream context to use (the service's own, once it is connected); ``config``
    is the bucket's, used only when the bucket must be created; ``delay`` is how long a message waits before it
    is tried again when the bucket cannot be reached."""

    def __init__(
        self, jetstream: Callable[[], JetStreamContext], config: KeyValueConfig, *, delay: float = 5.0
    ) -> None:
        self._jetstream = jetstream
        self.config = config
        self.delay = delay
        self._kv: KeyValue | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.bucket

    async def bucket(self) -> KeyValue:
        if self._kv is None:
            async with self._lock:
                if self._kv is None:
                    self._kv = await self._open()
        return self._kv

    async def _open(self) -> KeyValue:
        js = self._jetstream()
        try:
            return await js.key_value(self.name)
        except (BucketNotFoundError, NotFoundError):
            return await js.create_key_value(self.config)

    async def get(self, key: str) -> bytes | None:
        """The value kept under ``key``; None when there is none."""
        try:
            entry = await (await self.bucket()).get(key)
        except KeyNotFoundError:
            return None
        except Exception as error:
            raise TemporaryError(
                f"cannot read {key} from NATS KV bucket {self.name}: {error}", delay=self.delay
            ) from error
        return entry.value or None

    async def put(self, key: str, value: bytes) -> None:
        """Keep ``value`` under ``key``; a value too large for a message is a ``MessageTooLarge``, not retried."""
        payloads.check(payloads.connection(self._jetstream()), f"$KV.{self.name}.{key}", value)
        try:
            await (await self.bucket()).put(key, value)
        except Exception as error:
            raise TemporaryError(
                f"cannot write {key} to NATS KV bucket {self.name}: {error}", delay=self.delay
            ) from error
