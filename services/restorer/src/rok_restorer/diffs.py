"""The full diff between two versions, answered on ``rok.store.diff.v1`` for those who hold no store.

The registry and the CLI cannot read the store; the restorer can. A :class:`~rokcommon.diffs.DiffRequest` names
two version URLs and a namespace: both are resolved through the registry (so a URL of another namespace is
refused as it would be for a restore), their volumes are matched by name and each pair of snapshots is compared by
the store engine, which reads only the trees that differ. A volume that only one version holds is reported as added or
removed whole. Every replica answers in one queue group, so each request is answered once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from faststream.nats import NatsMessage
from pydantic import ValidationError
from rokcommon import payloads, subjects
from rokcommon.diffs import Diff, DiffRequest, VolumeChanges
from rokcommon.errors import InvalidRequest, RokError, TemporaryError
from rokcommon.events import invalid_event
from rokcommon.registry_contract import Member, Reply, encode_reply, error_body, reply_budget
from rokcommon.service import Service
from rokstore import Repository, diff, open_repository

from rok_restorer.restoring import Catalog

log = logging.getLogger(__name__)

QUEUE_GROUP = "rok-restorer-diffs"


async def diff_members(
    a: Sequence[Member], b: Sequence[Member], *, cache_dir: Path | None = None
) -> list[VolumeChanges]:
    """Compare two versions' members; the result follows the volume order of ``b``, then volumes only in ``a``."""
    by_name_a = {m.volume: m for m in a}
    by_name_b = {m.volume: m for m in b}
    names = [m.volume for m in b] + [m.volume for m in a if m.volume not in by_name_b]
    repos: dict[str, Repository] = {}
    try:

        async def one(name: str) -> VolumeChanges:
            ma, mb = by_name_a.get(name), by_name_b.get(name)
            if ma is None:
                return VolumeChanges(volume=name, a=None, b=mb.snapshot_id if mb else None)
            if mb is None:
                return VolumeChanges(volume=name, a=ma.snapshot_id, b=None)
            if ma.snapshot_id == mb.snapshot_id and ma.repository == mb.repository:
                return VolumeChanges(volume=name, a=ma.snapshot_id, b=mb.snapshot_id)
            if ma.repository != mb.repository:
                raise InvalidRequest(
                    f"cannot compare volume {name!r}: its snapshots are in two repositories "
                    f"({ma.repository} and {mb.repository})"
                )
            d = await diff(repos[mb.repository], ma.snapshot_id, mb.snapshot_id)
            return VolumeChanges(
                volume=name,
                a=ma.snapshot_id,
                b=mb.snapshot_id,
                added=tuple(d.added),
                removed=tuple(d.removed),
                changed=tuple(d.changed),
            )

        # Open each repository once, before the volumes are compared in parallel.
        for url in {m.repository for m in (*a, *b)}:
            repos[url] = await open_repository(url, cache_dir=cache_dir)
        return list(await asyncio.gather(*(one(n) for n in names)))
    finally:
        for r in repos.values():
            await r.close()


class Differ:
    """Answers diff requests: resolves both URLs with ``catalog``, then compares the versions in the store."""

    def __init__(self, catalog: Catalog, *, cache_dir: Path | None = None) -> None:
        self.catalog = catalog
        self.cache_dir = cache_dir

    async def diff(self, request: DiffRequest) -> Diff:
        a, b = await asyncio.gather(
            self.catalog.resolve(request.namespace, request.a), self.catalog.resolve(request.namespace, request.b)
        )
        return Diff(volumes=tuple(await diff_members(a.members, b.members, cache_dir=self.cache_dir)))

    async def reply(self, data: bytes) -> Reply:
        """The reply to one request: the diff, or the typed error that says why there is none."""
        try:
            request = DiffRequest.model_validate_json(data)
        except ValidationError as error:
            return Reply(error=error_body(InvalidRequest(str(invalid_event(DiffRequest, error)))))
        try:
            result = await self.diff(request)
        except RokError as error:
            log.warning("no diff of %s and %s: %s", request.a, request.b, error)
            return Reply(error=error_body(error))
        except Exception as error:  # the store misbehaved: the asker may try again
            log.exception("diff of %s and %s failed", request.a, request.b)
            reason = f"{type(error).__name__}: {error}"
            return Reply(error=error_body(TemporaryError(f"the store could not be compared: {reason}")))
        return Reply(result=result.model_dump(mode="json"))


def register(service: Service, differ: Differ) -> None:
    """Answer ``rok.store.diff.v1`` on the service's broker, one replica per request (a core-NATS queue group)."""

    @service.broker.subscriber(subjects.STORE_DIFF, queue=QUEUE_GROUP)
    async def answer_diff(msg: NatsMessage) -> bytes:
        reply = await differ.reply(msg.raw_message.data)
        return encode_reply(reply, reply_budget(payloads.limit(service.broker.connection)), "a diff")
