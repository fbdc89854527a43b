"""The registry's settings (``ROK_*`` environment variables) on top of rokcommon's."""

from __future__ import annotations

from pydantic import Field, field_validator
from rokcommon.authz import AccessSettings
from rokcommon.durations import parse_duration
from rokcommon.errors import InvalidRequest
from rokcommon.registry_contract import KeepRules
from rokcommon.settings import RokSettings


class RegistrySettings(RokSettings, AccessSettings):
    database_url: str = Field(
        "",
        description="SQL database: postgresql://user:pass@host/db, or sqlite:///path; default <state_dir>/registry.db",
    )
    registry_host: str = Field("127.0.0.1", description="address the registry's HTTP API and web pages bind")
    registry_port: int = Field(8470, ge=0, description="port of the registry's HTTP API and web pages (0: any)")
    registry_workers: int = Field(
        4, ge=1, le=64, description="batches of one stream recorded and still being announced and acked, at most"
    )
    registry_batch: int = Field(256, ge=1, le=4096, description="events recorded in one database transaction, at most")
    registry_hosts: str = Field(
        "", description="host names the HTTP API answers to besides loopback, comma-separated ('*': any)"
    )
    userid_header: str = Field("kubeflow-userid", description="cluster: the gateway's header naming the user")
    userid_prefix: str = Field("", description="cluster: the prefix the gateway puts before the user's name")

    retention_keep_last: int | None = Field(
        None, ge=1, description="retention policy: keep the N newest runs of every bucket (with keep-within: either)"
    )
    retention_keep_within: str = Field(
        "", description="retention policy: keep the runs started within this of each bucket's newest (30d, 1y2m)"
    )
    retention_keep_tags: str = Field(
        "final,failed", description="retention policy: of other runs keep the versions with these tags (','; '': none)"
    )
    retention_interval: float = Field(
        3600.0, gt=0, description="seconds between two applications of the retention policy"
    )

    @field_validator("retention_keep_within")
    @classmethod
    def _duration(cls, value: str) -> str:
        try:
            return str(parse_duration(value)) if value.strip() else ""
        except InvalidRequest as error:
            raise ValueError(f"ROK_RETENTION_KEEP_WITHIN: {error}") from None

    @property
    def retention(self) -> KeepRules | None:
        """The retention policy the registry applies on its own, or None when no keep rule is set (the default)."""
        if not self.retention_keep_last and not self.retention_keep_within:
            return None
        tags = tuple(t.strip() for t in self.retention_keep_tags.split(",") if t.strip())
        return KeepRules.model_validate(
            {
                "keep_last": self.retention_keep_last,
                "keep_within": self.retention_keep_within or None,
                "keep_tags": tags,
            }
        )

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(h.strip().lower() for h in self.registry_hosts.split(",") if h.strip())

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.state_dir / 'registry.db').resolve()}"
