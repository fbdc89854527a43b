"""Which volume snapshots are already done: a NATS KV bucket, keyed by the ``SnapshotCompleted`` event id.

A redelivered event (the snapshotter crashed after snapshotting but before acking, or JetStream timed out)
finds its record here and re-publishes the very same ``SnapshotCompleted`` instead of snapshotting again.
The same bucket remembers the latest snapshot of each volume (``latest.<hash of repository and cache key>``),
the parent the next snapshot of that volume is compared with.
"""

from __future__ import annotations

import hashlib
import json
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

    async def latest(self, repository: str, cache_key: str) -> str | None:
        value = await self._bucket.get(_latest_key(repository, cache_key))
        if not value:
            return None
        snapshot_id = json.loads(value).get("snapshot_id")
        return snapshot_id if isinstance(snapshot_id, str) else None

    async def remember(self, repository: str, cache_key: str, snapshot_id: str) -> None:
        doc = {"repository": repository, "cache_key": cache_key, "snapshot_id": snapshot_id}
        await self._bucket.put(_latest_key(repository, cache_key), json.dumps(doc).encode())


def _latest_key(repository: str, cache_key: str) -> str:
    return "latest." + hashlib.sha256(f"{repository}\0{cache_key}".encode()).hexdigest()[:40]
