"""The restorer's settings (``ROK_*`` environment variables) on top of rokcommon's."""

from __future__ import annotations

from pydantic import Field
from rokcommon.authz import AccessSettings
from rokcommon.settings import RokSettings


class RestorerSettings(RokSettings, AccessSettings):
    restore_workers: int = Field(2, ge=1, description="restore requests handled at once")
    restore_parallel_volumes: int = Field(4, ge=1, description="volumes of one request restored at once")
    registry_timeout: float = Field(5.0, gt=0, description="seconds to wait for the registry to resolve a URL")
    restore_progress_interval: float = Field(0.5, gt=0, description="seconds between two progress messages")
    restore_outcome_days: float = Field(30.0, gt=0, description="days a request's outcome is kept for redeliveries")
