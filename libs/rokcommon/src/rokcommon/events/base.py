"""What every event is: a frozen model with a deterministic ``event_id``, its subject and a checked
``schema_version``; the names and literals the events share."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Field,
    ValidationError,
    field_validator,
)

from rokcommon import subjects
from rokcommon.errors import InvalidEvent, UnsupportedSchemaVersion
from rokcommon.frozen import Model

SCHEMA_VERSION = 1

Name = Annotated[str, Field(min_length=1, max_length=253)]
NodeName = Annotated[str, AfterValidator(subjects.check_node_name)]
"""A Kubernetes node name (a DNS-1123 subdomain): it becomes a subject token, so nothing else may pass."""
Outcome = Literal["succeeded", "failed", "error"]
Tag = Literal["initial", "final", "failed"]

_VOLUME_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


def now() -> datetime:
    return datetime.now(UTC)


class Event(Model):
    """Fields every event carries."""

    subject: ClassVar[str]
    event_id: Name
    occurred_at: AwareDatetime = Field(default_factory=now)
    schema_version: int = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not supported (this build reads {SCHEMA_VERSION})")
        return value

    def subject_for(self) -> str:
        """The subject this event is published on (node-routed events add the node token)."""
        node = getattr(self, "node", None)
        if self.subject in subjects.NODE_ROUTED:
            assert isinstance(node, str)
            return subjects.for_node(self.subject, node)
        return self.subject

    @classmethod
    def decode(cls, data: bytes | str) -> Self:
        """Parse a payload, turning every way it can be wrong into :class:`InvalidEvent` naming the reason."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as error:
            raise invalid_event(cls, error) from error


def invalid_event(model: type[BaseModel], error: ValidationError) -> InvalidEvent:
    """An :class:`InvalidEvent` whose message names the model and each problem in one line."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in error.errors(include_url=False)
    )
    kind = UnsupportedSchemaVersion if any("schema_version" in e["loc"] for e in error.errors()) else InvalidEvent
    return kind(f"invalid {model.__name__}: {problems}")
