"""What a `RokCluster` says: its spec as a model, checked field by field before anything is applied.

The CRD's OpenAPI schema (deploy/operator/crd.yaml) refuses most bad specs at the API server; this model is the
validating step behind it, for what a schema cannot say (one bus, not two; a DSN Secret or the embedded database)
and for a cluster that runs the operator with an older CRD. Every error names the field: ``spec.bus.replicas``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from rokcommon.errors import PermanentError

GROUP = "rok.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "rokclusters"
KIND = "RokCluster"
API_VERSION = f"{GROUP}/{VERSION}"

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class InvalidSpec(PermanentError):
    """A RokCluster whose spec can never be applied as written; the message names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _secret_name(value: str) -> str:
    if not _NAME.match(value) or len(value) > 253:
        raise ValueError(f"{value!r} is not a Secret name (lower-case letters, digits and '-')")
    return value


SecretName = Annotated[str, AfterValidator(_secret_name)]


class Resources(_Model):
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        for resource, quantity in value.items():
            if not _QUANTITY.match(str(quantity)):
                raise ValueError(f"{resource}: {quantity!r} is not a Kubernetes quantity (e.g. 500m, 1Gi)")
        return value

    def as_kubernetes(self) -> dict[str, Any]:
        return {k: v for k, v in (("requests", self.requests), ("limits", self.limits)) if v}


class Store(_Model):
    """The object store: a Secret with the keys `repository` (s3://BUCKET/PREFIX), `access-key-id`,
    `secret-access-key` and, optionally, `endpoint` and `region`."""

    secret_name: SecretName = Field("rok-s3", alias="secretName")


class Bus(_Model):
    """NATS JetStream: a cluster of `replicas` servers that rok runs, or an external server at `externalURL`."""

    replicas: int = Field(3, ge=1, le=7)
    external_url: str | None = Field(None, alias="externalURL")

    @field_validator("external_url")
    @classmethod
    def _nats_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(nats|tls)://[^\s/]+(:[0-9]+)?$", value):
            raise ValueError(f"{value!r} is not a NATS URL (nats://HOST:PORT)")
        return value

    @field_validator("replicas")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"{value} servers cannot keep a quorum through the loss of one; use an odd number")
        return value


class Database(_Model):
    """The registry's database: `embedded` (SQLite on a volume, one registry replica: for trials) or
    `postgresql` (its DSN in a Secret, key `url`)."""

    type: Literal["embedded", "postgresql"] = "postgresql"
    secret_name: SecretName = Field("rok-database", alias="secretName")
    size: str = "1Gi"

    @field_validator("size")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not _QUANTITY.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 1Gi)")
        return value


class Snapshotter(_Model):
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=lambda: [{"operator": "Exists"}])
    resources: Resources | None = None


class Deployed(_Model):
    replicas: int | None = Field(None, ge=1, le=20)
    resources: Resources | None = None


class StepGuard(_Model):
    enabled: bool = True
    namespaces: list[str] = Field(default_factory=list)  # empty: every namespace but kube-system and rok's own


class Images(_Model):
    registry: str = ""  # prefixed to every rok image: "registry.example.com/" → registry.example.com/rok/…
    version: str = "0.1.0"

    @field_validator("registry")
    @classmethod
    def _slash(cls, value: str) -> str:
        if value and not value.endswith("/"):
            raise ValueError(f"{value!r} must end with '/' (it is prefixed to rok/<image>)")
        return value


class Observability(_Model):
    traces_endpoint: str = Field("tempo.monitoring:4317", alias="tracesEndpoint")


class RokClusterSpec(_Model):
    namespace: Literal["rok"] = "rok"
    store: Store = Field(default_factory=Store)
    bus: Bus = Field(default_factory=Bus)
    database: Database = Field(default_factory=Database)
    snapshotter: Snapshotter = Field(default_factory=Snapshotter)
    registry: Deployed = Field(default_factory=Deployed)
    pipeline_watcher: Deployed = Field(default_factory=Deployed, alias="pipelineWatcher")
    restorer: Deployed = Field(default_factory=Deployed)
    step_guard: StepGuard = Field(default_factory=StepGuard, alias="stepGuard")
    images: Images = Field(default_factory=Images)
    observability: Observability = Field(default_factory=Observability)

    @model_validator(mode="after")
    def _one_registry_on_sqlite(self) -> RokClusterSpec:
        if self.database.type == "embedded" and (self.registry.replicas or 1) > 1:
            raise ValueError("spec.registry.replicas: the embedded database serves one registry replica; use 1")
        return self


def parse(spec: dict[str, Any]) -> RokClusterSpec:
    """The spec, or :class:`InvalidSpec` naming each field that is wrong (``spec.bus.replicas: …``)."""
    try:
        return RokClusterSpec.model_validate(spec)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = ".".join(["spec", *(str(p) for p in item["loc"])])
            message = item["msg"].removeprefix("Value error, ")
            problems.append(message if message.startswith("spec.") else f"{field}: {message}")
        raise InvalidSpec("; ".join(problems)) from None
