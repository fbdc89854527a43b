"""Which volume snapshots are already done: a NATS KV bucket, keyed by the ``SnapshotCompleted`` event id.

A redelivered event (the snapshotter crashed after snapshotting but before acking, or JetStream timed out)
finds its record here and re-publishes the very same ``SnapshotCompleted`` instead of snapshotting again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from rokcommon.errors import TemporaryError
from rokcommon.events import SnapshotCompleted
from rokcommon.streams import PIPELINE


class SnapshotRecords:
    def __init__(self, jetstream: Callable[[], JetStreamContext], bucket: str = "rok-snapshots") -> None:
        self._jetstream = jetstream
        self.bucket = bucket
        self._kv: KeyValue | None = None
        self._lock = asyncio.Lock()

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            async with self._lock:
                if self._kv is None:
                    self._kv = await self._open()
        return self._kv

    async def _open(self) -> KeyValue:
        js = self._jetstream()
        try:
            return await js.key_value(self.bucket)
        except (BucketNotFoundError, NotFoundError):
            # Kept as long as the pipeline stream keeps the events that could be delivered again.
            config = KeyValueConfig(bucket=self.bucket, history=1, ttl=PIPELINE.max_age, storage=StorageType.FILE)
            return await js.create_key_value(config)

    async def get(self, key: str) -> SnapshotCompleted | None:
        try:
            entry = await (await self._bucket()).get(key)
        except KeyNotFoundError:
            return None
        except Exception as error:
            raise TemporaryError(f"cannot read snapshot record {key} from KV bucket {self.bucket}: {error}") from error
        return SnapshotCompleted.decode(entry.value) if entry.value else None

    async def put(self, key: str, event: SnapshotCompleted) -> None:
        try:
            await (await self._bucket()).put(key, event.model_dump_json().encode())
        except Exception as error:
            raise TemporaryError(f"cannot record snapshot {key} in KV bucket {self.bucket}: {error}") from error
