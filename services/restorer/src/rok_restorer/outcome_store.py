"""Requests' claims and outcomes, kept in a JetStream key-value bucket (shared by every restorer replica).

One key per request (its event id); the value is the :class:`~rok_restorer.restoring.Record` as JSON. Entries
expire after ``ttl`` seconds, long after JetStream stopped redelivering the request.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from rokcommon.events import RestoreCompleted, RestoreFailed
from rokcommon.kv import LazyBucket

from rok_restorer.restoring import Outcome, Record

BUCKET = "rok_restores"


class KvOutcomes:
    """``jetstream`` gives the JetStream context to use (the service's own, once it is connected)."""

    def __init__(self, jetstream: Callable[[], JetStreamContext], *, ttl: float) -> None:
        config = KeyValueConfig(
            bucket=BUCKET,
            description="rok restore requests: claimed targets and outcomes, for redeliveries",
            history=1,
            ttl=ttl,
            storage=StorageType.FILE,
        )
        self._bucket = LazyBucket(jetstream, config, delay=1.0)

    async def get(self, key: str) -> Record | None:
        value = await self._bucket.get(key)
        if not value:
            return None
        data = json.loads(value)
        return Record(data["state"], _outcome(data.get("outcome")))

    async def put(self, key: str, record: Record) -> None:
        value: dict[str, object] = {"state": record.state}
        if record.outcome is not None:
            value["outcome"] = {
                "kind": "completed" if isinstance(record.outcome, RestoreCompleted) else "failed",
                "event": record.outcome.model_dump(mode="json"),
            }
        await self._bucket.put(key, json.dumps(value).encode())


def _outcome(data: dict[str, object] | None) -> Outcome | None:
    if not data:
        return None
    model = RestoreCompleted if data["kind"] == "completed" else RestoreFailed
    return model.model_validate(data["event"])
