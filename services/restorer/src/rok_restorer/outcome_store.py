"""Requests' claims and outcomes, kept in a JetStream key-value bucket (shared by every restorer replica).

One key per request (its event id); the value is the :class:`~rok_restorer.restoring.Record` as JSON. Entries
expire after ``ttl`` seconds, long after JetStream stopped redelivering the request.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue
from rokcommon.errors import TemporaryError
from rokcommon.events import RestoreCompleted, RestoreFailed

from rok_restorer.restoring import Outcome, Record

BUCKET = "rok_restores"


class KvOutcomes:
    """``jetstream`` gives the JetStream context to use (the service's own, once it is connected)."""

    def __init__(self, jetstream: Callable[[], JetStreamContext], *, ttl: float) -> None:
        self.jetstream = jetstream
        self.ttl = ttl
        self._kv: KeyValue | None = None

    async def bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self.jetstream().key_value(BUCKET)
            except BucketNotFoundError:
                self._kv = await self.jetstream().create_key_value(
                    KeyValueConfig(
                        bucket=BUCKET,
                        description="rok restore requests: claimed targets and outcomes, for redeliveries",
                        history=1,
                        ttl=self.ttl,
                        storage=StorageType.FILE,
                    )
                )
        return self._kv

    async def get(self, key: str) -> Record | None:
        try:
            entry = await (await self.bucket()).get(key)
        except KeyNotFoundError:
            return None
        except Exception as error:
            raise TemporaryError(f"cannot read restore state {key} from NATS: {error}", delay=1.0) from error
        if not entry.value:
            return None
        data = json.loads(entry.value)
        return Record(data["state"], _outcome(data.get("outcome")))

    async def put(self, key: str, record: Record) -> None:
        value: dict[str, object] = {"state": record.state}
        if record.outcome is not None:
            value["outcome"] = {
                "kind": "completed" if isinstance(record.outcome, RestoreCompleted) else "failed",
                "event": record.outcome.model_dump(mode="json"),
            }
        try:
            await (await self.bucket()).put(key, json.dumps(value).encode())
        except Exception as error:
            raise TemporaryError(f"cannot record restore state {key} in NATS: {error}", delay=1.0) from error


def _outcome(data: dict[str, object] | None) -> Outcome | None:
    if not data:
        return None
    model = RestoreCompleted if data["kind"] == "completed" else RestoreFailed
    return model.model_validate(data["event"])
