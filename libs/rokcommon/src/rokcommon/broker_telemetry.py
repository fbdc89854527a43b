"""FastStream's tracing of a service's broker, with span names that stay few: a reply is named after its request.

Kept apart from :mod:`rokcommon.telemetry` so that the commands, which use no broker, do not import FastStream.
"""

from __future__ import annotations

from typing import Any

from faststream.nats.opentelemetry.provider import NatsTelemetrySettingsProvider, telemetry_attributes_provider_factory
from faststream.opentelemetry.middleware import TelemetryMiddleware
from faststream.response.publish_type import PublishType
from nats.aio.msg import Msg

from rokcommon.telemetry import Telemetry


class _ReplyNamingProvider(NatsTelemetrySettingsProvider):
    """FastStream's NATS span naming, but a reply is named after the request it answers.

    A reply goes to the requester's inbox (``_INBOX.<random>``): named after it, each reply would be an operation
    of its own in a trace backend. ``<request subject> reply`` is one name per query, whichever client asked.
    """

    def __init__(self, request_subject: str | None) -> None:
        super().__init__()
        self.request_subject = request_subject

    def get_publish_destination_name(self, cmd: Any) -> str:
        if cmd.publish_type is PublishType.REPLY and self.request_subject:
            return f"{self.request_subject} reply"
        return str(cmd.destination)


def _provider_factory(msg: Any) -> Any:
    if isinstance(msg, Msg) or msg is None:
        return _ReplyNamingProvider(msg.subject if isinstance(msg, Msg) else None)
    return telemetry_attributes_provider_factory(msg)


def nats_telemetry(telemetry: Telemetry) -> TelemetryMiddleware[Any]:
    """The broker middleware that traces FastStream's consumes and publishes (FastStream's own, with stable reply
    names: see :class:`_ReplyNamingProvider`)."""
    return TelemetryMiddleware(
        settings_provider_factory=_provider_factory,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        include_messages_counters=True,
    )
