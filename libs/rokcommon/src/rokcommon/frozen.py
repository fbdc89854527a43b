"""The base of every value rok carries on the bus or returns from the registry (no other rok module needed, so
that value modules such as :mod:`rokcommon.notebooks` and the events can use each other)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Base of every value carried on the bus: immutable, and unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")
