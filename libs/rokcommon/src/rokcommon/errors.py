"""The two kinds of failure every rok component speaks of.

A :class:`PermanentError` can never succeed, however often it is retried (an invalid payload, an unknown
volume, a corrupt pack): a consumer terminates the message and sends it to the dead-letter stream.
A :class:`TemporaryError` may succeed later (the object store or the database is unreachable): a consumer
naks the message with a delay so that JetStream redelivers it.

Every error carries a message meant for a person: what went wrong, with the value that was wrong, and what
to do about it. The CLI prints it as one line.
"""

from __future__ import annotations


class RokError(Exception):
    """Base of every expected rok failure; ``str(error)`` is a sentence a user can act on."""

    exit_code: int = 1


class PermanentError(RokError):
    """Retrying cannot help: terminate, dead-letter, report."""


class TemporaryError(RokError):
    """Retrying later may help: nak with ``delay`` seconds."""

    def __init__(self, message: str, *, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class InvalidEvent(PermanentError):
    """A message that is not a valid event of its subject (bad JSON, unknown field, unsupported schema)."""


class UnsupportedSchemaVersion(InvalidEvent):
    """An event whose ``schema_version`` this code does not understand."""


class NotFound(PermanentError):
    """What was asked for does not exist (an unknown URL, bucket, run or version)."""


class Forbidden(PermanentError):
    """What was asked for belongs to another namespace."""


class InvalidRequest(PermanentError):
    """A request that can never be answered as asked (a malformed URL, a missing field)."""


class AnswerTooLarge(InvalidRequest):
    """An answer larger than one bus message may carry (the server's ``max_payload``): ask for less."""


class QueryFailed(RokError):
    """A service failed to answer a query for a reason of its own (not the asker's): the message names it."""
