"""The registry's settings (``ROK_*`` environment variables) on top of rokcommon's."""

from __future__ import annotations

from pydantic import Field
from rokcommon.authz import AccessSettings
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

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(h.strip().lower() for h in self.registry_hosts.split(",") if h.strip())

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.state_dir / 'registry.db').resolve()}"
