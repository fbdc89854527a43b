"""The operator's settings (``ROK_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rokcommon.kube import Kube


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROK_", extra="ignore", frozen=True)

    kube: Kube = Field("incluster", description="how to reach the API server: incluster or kubeconfig")
    kubeconfig: Path | None = Field(None, description="the kubeconfig file with ROK_KUBE=kubeconfig")
    resync_seconds: float = Field(
        30.0, gt=0, description="seconds between two checks of every child (a deleted or edited one is restored)"
    )
    health_port: int = Field(8081, ge=1, le=65535, description="port of kopf's liveness endpoint (/healthz)")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
