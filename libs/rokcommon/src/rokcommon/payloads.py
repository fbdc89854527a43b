"""What fits in one NATS message, measured before it is sent.

nats-server refuses a message whose headers and payload together exceed its ``max_payload`` (1 MiB by default,
announced in its INFO) by closing the connection of the client that sent it: one oversized publish would cut a
service off the bus. nats-py checks the payload alone, so a payload just under the limit with a few headers
still goes out. Every rok publish therefore measures the whole message first (:func:`check`) and fails with a
:class:`MessageTooLarge` naming the subject and both sizes, and the connection stays up.
"""

from __future__ import annotations

from collections.abc import Mapping

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from opentelemetry import propagate

from rokcommon.errors import PermanentError, TemporaryError

_HEADER_LINE = len(b"NATS/1.0\r\n")
_HEADER_END = len(b"\r\n")


class MessageTooLarge(PermanentError):
    """A message larger than the server's ``max_payload``: sending it would close the connection."""

    def __init__(self, subject: str, size: int, limit: int) -> None:
        super().__init__(
            f"a message of {size} bytes on {subject} exceeds the NATS server's max_payload of {limit} bytes "
            "(headers included); it was not sent"
        )
        self.subject, self.size, self.limit = subject, size, limit


def header_size(headers: Mapping[str, str] | None) -> int:
    """The bytes nats-py writes for ``headers`` (``NATS/1.0``, one ``Key: value`` line each, a blank line)."""
    if not headers:
        return 0
    lines = sum(len(k.strip().encode()) + 2 + len(v.strip().encode()) + 2 for k, v in headers.items() if k.strip())
    return _HEADER_LINE + lines + _HEADER_END


def message_size(payload: bytes, headers: Mapping[str, str] | None = None) -> int:
    """What the server counts against ``max_payload``: headers and payload."""
    return header_size(headers) + len(payload)


def limit(nc: Client) -> int:
    """The connected server's ``max_payload`` (from its INFO)."""
    return int(nc.max_payload)


def check(nc: Client, subject: str, payload: bytes, headers: Mapping[str, str] | None = None) -> None:
    """Raise :class:`MessageTooLarge` unless the message fits the server's ``max_payload``."""
    size, most = message_size(payload, headers), limit(nc)
    if size > most:
        raise MessageTooLarge(subject, size, most)


def connection(js: JetStreamContext) -> Client:
    """The connection a JetStream context publishes on (nats-py keeps it private)."""
    nc: Client = js._nc
    return nc


async def request(nc: Client, subject: str, data: bytes, *, timeout: float, nobody: str, too_late: str) -> Msg:
    """Ask ``subject`` with ``data`` — measured first (:func:`check`), the asker's trace context in its headers —
    and return the answer; no responder is a :class:`~rokcommon.errors.TemporaryError` saying ``nobody``, no
    answer within ``timeout`` seconds one saying ``too_late``."""
    headers: dict[str, str] = {}
    propagate.inject(headers)  # the answer joins the asker's trace
    check(nc, subject, data, headers)
    try:
        return await nc.request(subject, data, timeout=timeout, headers=headers or None)
    except NoRespondersError:
        raise TemporaryError(nobody, delay=1.0) from None
    except (TimeoutError, NatsTimeoutError):
        raise TemporaryError(too_late, delay=1.0) from None
