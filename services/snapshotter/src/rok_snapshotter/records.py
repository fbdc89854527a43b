"""Which volume snapshots are already done: a NATS KV bucket, keyed by the ``SnapshotCompleted`` event id.

A redelivered event (the snapshotter crashed after snapshotting but before acking, or JetStream timed out)
finds its record here and re-publishes the very same ``SnapshotCompleted`` instead of snapshotting again.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from rokcommon.events import SnapshotCompleted
from rokcommon.kv import LazyBucket
from rokcommon.streams import PIPELINE


class SnapshotRecords:
    def __init__(self, jetstream: Callable[[], JetStreamContext], bucket: str = "rok-snapshots") -> None:
        # Kept as long as the pipeline stream keeps the events that could be delivered again.
        config = KeyValueConfig(bucket=bucket, history=1, ttl=PIPELINE.max_age, storage=StorageType.FILE)
        self._bucket = LazyBucket(jetstream, config)
        self.bucket = bucket

    async def get(self, key: str) -> SnapshotCompleted | None:
        value = await self._bucket.get(key)
        return SnapshotCompleted.decode(value) if value else None

    async def put(self, key: str, event: SnapshotCompleted) -> None:
        await self._bucket.put(key, event.model_dump_json().encode())
