"""Asking the registry over NATS request-reply: :class:`RegistryClient`, within one namespace.

The questions and answers are those of :mod:`rokcommon.registry_contract`; a typed error reply is raised as the
exception its kind names. Use::

    registry = RegistryClient(nc, "team-a")
    resolved = await registry.resolve("rok://team-a/exp-3mis2/train-3mis2-a1b2?version=k3x9q2mf7z")
    for member in resolved.members:  # workspace first
        print(member.volume, member.snapshot_id)
"""

from __future__ import annotations

from typing import Any, TypeVar

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from rokcommon import payloads, subjects
from rokcommon.errors import InvalidRequest, TemporaryError
from rokcommon.events import Model, Phase, invalid_event
from rokcommon.registry_contract import (
    QUERIES,
    Bucket,
    Buckets,
    Files,
    Found,
    Lineage,
    Reply,
    Resolved,
    RunFile,
    SearchHit,
    SearchHits,
    Version,
    Versions,
    raise_error,
)
from rokcommon.urls import parse_url

tracer = trace.get_tracer("rokcommon.registry_client")

T = TypeVar("T", bound=Model)


class RegistryClient:
    """Ask the registry over NATS request-reply, within one namespace.

    Raises :class:`~rokcommon.errors.NotFound`, :class:`~rokcommon.errors.Forbidden` or
    :class:`~rokcommon.errors.InvalidRequest` (:class:`InvalidUrl` for a malformed URL, before asking), and
    :class:`~rokcommon.errors.TemporaryError` when no registry answers within ``timeout`` seconds or it cannot
    answer now (its database is down).
    """

    def __init__(self, nc: Client, namespace: str, *, timeout: float = 10.0) -> None:
        self.nc = nc
        self.namespace = namespace
        self.timeout = timeout

    async def list_buckets(self) -> list[Bucket]:
        return list((await self._ask("buckets", Buckets)).items)

    async def list_files(self, bucket: str) -> list[RunFile]:
        return list((await self._ask("files", Files, bucket=bucket)).items)

    async def list_versions(self, bucket: str, file: str) -> list[Version]:
        return list((await self._ask("versions", Versions, bucket=bucket, file=file)).items)

    async def get_version(self, url: str) -> Version:
        parse_url(url)
        return await self._ask("version", Version, url=url)

    async def resolve(self, url: str) -> Resolved:
        parse_url(url)
        return await self._ask("resolve", Resolved, url=url)

    async def lineage(self, bucket: str, file: str) -> Lineage:
        return await self._ask("lineage", Lineage, bucket=bucket, file=file)

    async def find_version(
        self, workflow_uid: str, step_id: str | None, phase: Phase, *, attempt: int | None = None
    ) -> Version | None:
        found = await self._ask("find", Found, workflow_uid=workflow_uid, step_id=step_id, phase=phase, attempt=attempt)
        return found.version

    async def search(self, text: str, *, limit: int = 50) -> list[SearchHit]:
        return list((await self._ask("search", SearchHits, text=text, limit=limit)).items)

    async def _ask(self, name: str, result: type[T], **fields: Any) -> T:
        request_model, _ = QUERIES[name]
        try:
            request = request_model(namespace=self.namespace, **fields)
        except ValidationError as error:  # asked wrongly (a 100 KB search): the asker's error, in one line
            raise InvalidRequest(str(invalid_event(request_model, error))) from None
        subject = subjects.registry_query(name)
        with tracer.start_as_current_span(
            f"{subject} request",
            kind=SpanKind.CLIENT,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject},
        ):
            headers: dict[str, str] = {}
            propagate.inject(headers)
            data = request.model_dump_json().encode()
            payloads.check(self.nc, subject, data, headers)
            try:
                msg = await self.nc.request(subject, data, timeout=self.timeout, headers=headers)
            except NoRespondersError:
                raise TemporaryError(
                    f"no registry answers on {subject}: is rok-registry running (rok up)?", delay=1.0
                ) from None
            except (TimeoutError, NatsTimeoutError):
                raise TemporaryError(
                    f"the registry did not answer {name} within {self.timeout:g}s", delay=1.0
                ) from None
        reply = Reply.model_validate_json(msg.data)
        if reply.error is not None:
            raise_error(reply.error)
        return result.model_validate(reply.result or {})
