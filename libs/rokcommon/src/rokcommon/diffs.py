"""The full diff between two versions, asked over NATS request-reply of a service that holds the store.

The registry reads no store, so ``rok diff`` and the web page's compare send a :class:`DiffRequest` (two version
URLs in one namespace) to :data:`~rokcommon.subjects.STORE_DIFF`; the restorer resolves both URLs through the
registry, compares the versions volume by volume in the store and answers with a
:class:`~rokcommon.registry_contract.Reply` whose result is a :class:`Diff`, or a typed error (the same kinds as
the registry's). Use::

    changes = await request_diff(nc, "team-a", before_url, after_url)
    for volume in changes:
        print(volume.volume, len(volume.added), len(volume.removed), len(volume.changed))
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from rokcommon import payloads, subjects
from rokcommon.events import Model, Name
from rokcommon.registry_contract import Reply, raise_error
from rokcommon.urls import parse_url

tracer = trace.get_tracer("rokcommon.diffs")

DIFF_TIMEOUT = 60.0  # seconds: a diff reads the trees that differ, per volume, from the store


class VolumeChanges(Model):
    """One volume compared: ``a``/``b`` are its snapshot ids in the first/second version (None: not there)."""

    volume: str
    a: str | None
    b: str | None
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def unchanged(self) -> bool:
        return self.a == self.b or (
            self.a is not None and self.b is not None and not (self.added or self.removed or self.changed)
        )

    @property
    def count(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json"), "unchanged": self.unchanged}


class DiffRequest(Model):
    """Compare version ``a`` with version ``b`` (``rok://`` version URLs), both read within ``namespace``."""

    namespace: Name
    a: str
    b: str


class Diff(Model):
    """The volumes of ``b`` in its order, then those only ``a`` holds."""

    volumes: tuple[VolumeChanges, ...] = ()


async def request_diff(
    nc: Client, namespace: str, a: str, b: str, *, timeout: float = DIFF_TIMEOUT
) -> list[VolumeChanges]:
    """What changed from version ``a`` to version ``b``, volume by volume.

    Raises :class:`~rokcommon.urls.InvalidUrl` for a malformed URL (before asking), the error the registry gave
    for a URL it does not know or that is not the caller's (:class:`~rokcommon.errors.NotFound`,
    :class:`~rokcommon.errors.Forbidden`), and :class:`~rokcommon.errors.TemporaryError` when no service answers.
    """
    parse_url(a)
    parse_url(b)
    request = DiffRequest(namespace=namespace, a=a, b=b)
    with tracer.start_as_current_span(f"{subjects.STORE_DIFF} request", kind=SpanKind.CLIENT) as span:
        span.set_attribute("messaging.system", "nats")
        span.set_attribute("messaging.destination.name", subjects.STORE_DIFF)
        msg = await payloads.request(
            nc,
            subjects.STORE_DIFF,
            request.model_dump_json().encode(),
            timeout=timeout,
            nobody=f"no service answers diffs on {subjects.STORE_DIFF}: is rok-restorer running (rok up)?",
            too_late=f"no diff of {a} and {b} came back within {timeout:g}s",
        )
    reply = Reply.model_validate_json(msg.data)
    if reply.error is not None:
        raise_error(reply.error)
    return list(Diff.model_validate(reply.result or {}).volumes)
