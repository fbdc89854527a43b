"""Settings from environment variables (``ROK_*``), with defaults that run everything on one machine.

Each service extends :class:`RokSettings` with its own fields; the prefix stays ``ROK_``. OpenTelemetry reads
its own standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``, …).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path, PurePosixPath
from typing import Annotated, TypeVar

from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rokcommon.errors import RokError
from rokcommon.subjects import check_node_name

NodeName = Annotated[str, AfterValidator(check_node_name)]
"""``ROK_NODE_NAME``: a Kubernetes node name (a DNS-1123 subdomain), since it becomes a subject token."""


def _default_state_dir() -> Path:
    return Path.home() / ".local" / "state" / "rok"


def _default_node_name() -> str:
    return socket.gethostname().lower()


class RokSettings(BaseSettings):
    """What every rok process reads."""

    model_config = SettingsConfigDict(env_prefix="ROK_", extra="ignore", frozen=True)

    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server(s), comma-separated")
    state_dir: Path = Field(default_factory=_default_state_dir, description="local state: repository, database, logs")
    repository: str = Field("", description="store URL (file:///… or s3://bucket/prefix); default under state_dir")
    namespace: str = Field("local", description="the namespace local runs and queries belong to")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: str = Field("json", description="json (one object per line) or text")
    nats_user: str = Field("", description="NATS user this process connects as (empty: without credentials)")
    nats_password: SecretStr = Field("", validate_default=True, description="password of ROK_NATS_USER")
    stream_replicas: int = Field(1, ge=1, le=5, description="servers of a NATS cluster that keep each stream")
    max_deliver: int = Field(5, ge=1, description="deliveries of one message before it is dead-lettered")
    ack_wait: float = Field(30.0, gt=0, description="seconds JetStream waits for an ack before redelivering")
    retry_delay: float = Field(2.0, ge=0, description="first delay (seconds) before a failed message is retried")
    health_host: str = Field("127.0.0.1", description="address of the /livez and /readyz server")
    health_port: int | None = Field(
        None, ge=0, le=65535, description="port of the /livez and /readyz server; unset: none (0: any free port)"
    )
    health_cache: float = Field(
        10.0, ge=0, description="seconds a remote check's answer (the object store's) is reused by later probes"
    )
    volume_roots: str = Field(
        "",
        description="directories (':'-separated) local volumes may lie in, besides state_dir; default the home dir",
    )

    @field_validator("volume_roots")
    @classmethod
    def _absolute_roots(cls, value: str) -> str:
        relative = [r for r in split_roots(value) if not PurePosixPath(r).is_absolute()]
        if relative:
            raise ValueError(f"ROK_VOLUME_ROOTS must list absolute directories, got {', '.join(relative)}")
        return value

    @property
    def local_volume_roots(self) -> tuple[Path, ...]:
        """The directories the snapshotter reads local volumes in: the configured ones (default the home
        directory) and the state directory, where ``rok run`` clones a run's volumes. ``rok run`` checks a
        pipeline's volumes against them before it starts."""
        given = tuple(Path(r) for r in split_roots(self.volume_roots)) or (Path.home(),)
        return (*given, self.state_dir)

    @property
    def repository_url(self) -> str:
        return self.repository or (self.state_dir / "repo").resolve().as_uri()

    @property
    def nats_servers(self) -> list[str]:
        return [s.strip() for s in self.nats_url.split(",") if s.strip()]


def split_roots(value: str) -> list[str]:
    """Directories listed as in PATH (':'-separated), as ROK_VOLUME_ROOTS and ROK_RESTORE_ROOTS give them."""
    return [r.strip() for r in value.split(os.pathsep) if r.strip()]


def node_name_default() -> str:
    return _default_node_name()


S = TypeVar("S", bound=BaseSettings)


class InvalidSettings(RokError):
    """A ``ROK_*`` variable whose value cannot be used; the message names the variable and the value."""

    exit_code = 2


def load(cls: type[S]) -> S:
    """``cls()`` from the environment; a bad value is one :class:`InvalidSettings` line, not a traceback."""
    try:
        return cls()
    except ValidationError as error:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = "; ".join(
            f"{prefix}{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors(include_url=False)
        )
        raise InvalidSettings(f"invalid settings: {problems}") from None
