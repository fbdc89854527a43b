"""Asking the registry to forget and pin, and which snapshots it still records: :class:`RetentionClient`.

The requests and answers are those of :data:`rokcommon.registry_contract.RETENTION`, on
``rok.registry.retention.<name>.v1``; a typed error reply is raised as the exception its kind names. Use::

    retention = RetentionClient(nc, "team-a", requested_by="alice")
    report = await retention.forget(KeepRules(keep_last=10), bucket="exp-3mis2", dry_run=True)
    await retention.pin("rok://team-a/exp-3mis2/train-3mis2-a1b2")

    recorded, forgotten = await recorded_snapshots(nc, store_snapshot_ids)  # what the store's gc asks
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from nats.aio.client import Client

from rokcommon import payloads, subjects
from rokcommon.events import Model
from rokcommon.registry_client import ask_registry
from rokcommon.registry_contract import (
    RETENTION,
    SNAPSHOTS_ASKED,
    ForgetReport,
    KeepRules,
    Pinned,
    SnapshotsKnown,
    reply_budget,
)

T = TypeVar("T", bound=Model)


class RetentionClient:
    """Forget and pin within one namespace, over NATS request-reply (as :class:`~rokcommon.registry_client.
    RegistryClient` asks its queries); ``requested_by`` is who the forget and the pins are recorded as."""

    def __init__(self, nc: Client, namespace: str, *, requested_by: str = "", timeout: float = 60.0) -> None:
        self.nc = nc
        self.namespace = namespace
        self.requested_by = requested_by
        self.timeout = timeout

    async def forget(self, rules: KeepRules, *, bucket: str | None = None, dry_run: bool = False) -> ForgetReport:
        """Forget what ``rules`` keep not, in ``bucket`` (every bucket when None); ``dry_run``: only say what."""
        fields = {"bucket": bucket, "rules": rules, "dry_run": dry_run, "requested_by": self.requested_by}
        return await ask(self.nc, "forget", ForgetReport, timeout=self.timeout, namespace=self.namespace, **fields)

    async def pin(self, url: str, *, pinned: bool = True) -> Pinned:
        """Pin (``pinned`` False: unpin) the bucket, run or version ``url`` names."""
        fields = {"url": url, "pinned": pinned, "requested_by": self.requested_by}
        return await ask(self.nc, "pin", Pinned, timeout=self.timeout, namespace=self.namespace, **fields)


async def recorded_snapshots(nc: Client, ids: Sequence[str], *, timeout: float = 30.0) -> tuple[set[str], set[str]]:
    """Of the snapshot ``ids`` (every namespace's), those the registry records and those it forgot.

    Asked a batch at a time, each batch as many ids as one message carries: the answer, a part of the question,
    fits too.
    """
    recorded: set[str] = set()
    forgotten: set[str] = set()
    room = reply_budget(payloads.limit(nc)) - 1024
    batch: list[str] = []
    size = 0

    async def flush() -> None:
        nonlocal batch, size
        if batch:
            known = await ask(nc, "snapshots", SnapshotsKnown, timeout=timeout, ids=tuple(batch))
            recorded.update(known.recorded)
            forgotten.update(known.forgotten)
        batch, size = [], 0

    for sid in ids:
        cost = len(sid.encode()) + 3  # quoted, and a comma
        if batch and (size + cost > room or len(batch) >= SNAPSHOTS_ASKED):
            await flush()
        batch.append(sid)
        size += cost
    await flush()
    return recorded, forgotten


async def ask(nc: Client, name: str, result: type[T], *, timeout: float, **fields: Any) -> T:
    """Send the retention request ``name`` with ``fields`` and return its result (or raise its error)."""
    subject = subjects.registry_retention(name)
    return await ask_registry(nc, subject, name, RETENTION[name][0], result, timeout=timeout, **fields)
