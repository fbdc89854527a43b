"""Asking the registry: the query models, ``rok://`` URLs, and a small async client over NATS request-reply.

Every query is a request model carrying the caller's ``namespace``, sent to ``rok.registry.<query>.v1``
(:data:`QUERIES` maps each query name to its request and result models). The reply is a :class:`Reply`: either
a ``result`` or a typed ``error`` (``not_found`` / ``forbidden`` / ``invalid`` / ``unavailable``), which the client
raises as :class:`~rokcommon.errors.NotFound`, :class:`~rokcommon.errors.Forbidden`,
:class:`~rokcommon.errors.InvalidRequest` or :class:`~rokcommon.errors.TemporaryError` with the registry's
message. The registry's HTTP API (``/api/v1/namespaces/{ns}/...``) returns the same result models as JSON.

URLs name what the registry records::

    rok://<namespace>/<bucket>                                  a bucket (one per experiment)
    rok://<namespace>/<bucket>/<file>                           a file (one per run)
    rok://<namespace>/<bucket>/<file>?version=<id>              a version (the volumes of one snapshot)
    rok://<namespace>/<bucket>/<file>?version=<id>&volume=<v>   one volume of a version

Use::

    registry = RegistryClient(nc, "team-a")
    resolved = await registry.resolve("rok://team-a/exp-3mis2/train-3mis2-a1b2?version=k3x9q2mf7z")
    for member in resolved.members:  # workspace first
        await repo.restore(member.snapshot_id, target / member.volume)
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, Field

from rokcommon import subjects
from rokcommon.errors import Forbidden, InvalidRequest, NotFound, PermanentError, TemporaryError
from rokcommon.events import Model, Name, Outcome, Phase, Tag

tracer = trace.get_tracer("rokcommon.registry_client")

VersionStatus = Literal["pending", "complete", "partial"]  # pending: not every volume recorded yet
RunStatus = Literal["running", "succeeded", "failed", "error"]
ErrorKind = Literal["not_found", "forbidden", "invalid", "unavailable"]  # unavailable: e.g. its database is down


# --- rok:// URLs -------------------------------------------------------------------------------------------

SCHEME = "rok"
_NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,251}[a-z0-9])?$")
_VERSION_ID = re.compile(r"^[a-z0-9]{4,32}$")
_VOLUME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


class InvalidUrl(InvalidRequest):
    """A string that is not a well-formed ``rok://`` URL; the message says which part is wrong."""


class RokUrl(Model):
    """A parsed ``rok://`` URL. ``str(url)`` gives it back in its one canonical form."""

    namespace: str
    bucket: str
    file: str | None = None
    version: str | None = None
    volume: str | None = None

    def __str__(self) -> str:
        return format_url(self.namespace, self.bucket, self.file, self.version, self.volume)

    @property
    def version_url(self) -> str:
        """The URL of the whole version (without ``&volume=``)."""
        return format_url(self.namespace, self.bucket, self.file, self.version)


def format_url(
    namespace: str, bucket: str, file: str | None = None, version: str | None = None, volume: str | None = None
) -> str:
    """``format_url("team-a", "exp-3mis2", "train-3mis2-a1b2", "k3x9q2mf7z")`` → ``rok://team-a/...?version=...``."""
    if version and not file:
        raise InvalidUrl(f"a version URL needs a file (version {version!r} in bucket {bucket!r})")
    if volume and not version:
        raise InvalidUrl(f"a volume URL needs a version (volume {volume!r})")
    url = f"{SCHEME}://{namespace}/{bucket}"
    if file:
        url += f"/{file}"
    if version:
        url += f"?version={version}"
    if volume:
        url += f"&volume={quote(volume, safe='')}"
    return url


def parse_url(url: str) -> RokUrl:
    """Parse a ``rok://`` URL, raising :class:`InvalidUrl` that names what is wrong and how it should look."""
    shape = "rok://<namespace>/<bucket>/<file>?version=<id>[&volume=<name>]"
    if not isinstance(url, str) or not url.strip():
        raise InvalidUrl(f"empty URL: expected {shape}")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise InvalidUrl(f"{url!r} is not a rok URL: it must start with rok:// ({shape})")
    namespace = parts.netloc
    if not _NAMESPACE.match(namespace):
        raise InvalidUrl(f"{url!r}: namespace {namespace!r} is not a valid namespace name ({shape})")
    if parts.fragment:
        raise InvalidUrl(f"{url!r}: a rok URL has no #fragment")
    path = [unquote(p) for p in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
    if not path or len(path) > 2:
        raise InvalidUrl(f"{url!r}: expected /<bucket> or /<bucket>/<file> after the namespace ({shape})")
    for what, name in zip(("bucket", "file"), path, strict=False):
        if not _NAME.match(name):
            raise InvalidUrl(f"{url!r}: {what} {name!r} must be lower-case letters, digits and '-'")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise InvalidUrl(f"{url!r}: malformed query {parts.query!r} ({shape})") from None
    unknown = set(query) - {"version", "volume"}
    if unknown:
        raise InvalidUrl(f"{url!r}: unknown parameter(s) {', '.join(sorted(unknown))}; only version and volume")
    for key, values in query.items():
        if len(values) != 1:
            raise InvalidUrl(f"{url!r}: {key} is given {len(values)} times")
    version = query.get("version", [None])[0]
    volume = query.get("volume", [None])[0]
    if version is not None and not _VERSION_ID.match(version):
        raise InvalidUrl(f"{url!r}: version {version!r} is not a version id (4-32 lower-case letters and digits)")
    if version is not None and len(path) < 2:
        raise InvalidUrl(f"{url!r}: a version belongs to a file: rok://{namespace}/{path[0]}/<file>?version=…")
    if volume is not None and version is None:
        raise InvalidUrl(f"{url!r}: volume= needs version= as well ({shape})")
    if volume is not None and not _VOLUME.match(volume):
        raise InvalidUrl(f"{url!r}: volume {volume!r} is not a valid volume name")
    return RokUrl(
        namespace=namespace,
        bucket=path[0],
        file=path[1] if len(path) > 1 else None,
        version=version,
        volume=volume,
    )


# --- results -----------------------------------------------------------------------------------------------


class Bucket(Model):
    """One per KFP experiment (runs without one go to the namespace's ``default-…`` bucket)."""

    namespace: str
    name: str
    url: str
    experiment: str | None = None
    created_at: datetime
    files: int = 0


class RunFile(Model):
    """One per pipeline run."""

    namespace: str
    bucket: str
    name: str
    url: str
    pipeline_name: str | None = None
    pipeline_version: str | None = None
    run_id: str
    run_name: str | None = None
    workflow_uid: str
    status: RunStatus = "running"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    versions: int = 0


class Member(Model):
    """One volume of a version; the workspace volume comes first."""

    volume: str
    role: Literal["workspace", "data"] = "data"
    snapshot_id: str
    repository: str
    size: int = 0  # bytes of content in the volume
    bytes_new: int = 0  # bytes this snapshot stored that the repository did not hold before
    files: int = 0
    url: str


class FailedVolume(Model):
    volume: str
    reason: str


class Version(Model):
    """A snapshot of a step's volumes (or of the notebook's, for the run's initial version)."""

    id: str
    url: str
    namespace: str
    bucket: str
    file: str
    workflow_uid: str
    run_id: str
    step_id: str | None = None  # None for the initial version
    step_name: str | None = None
    attempt: int = 0
    phase: Phase
    tags: tuple[Tag, ...] = ()
    taken_at: datetime | None = None
    status: VersionStatus = "pending"
    best_effort: bool = False
    volumes: tuple[str, ...] = ()  # every volume the version holds, workspace first
    members: tuple[Member, ...] = ()  # the volumes recorded so far, workspace first
    failed: tuple[FailedVolume, ...] = ()
    size: int = 0
    bytes_new: int = 0

    @property
    def committed(self) -> bool:
        """Every volume is recorded (stored or failed): what a step guard waits for."""
        return self.status != "pending"


class Resolved(Model):
    """What a URL stands for: the version, and the members it names (all, or the one of ``&volume=``)."""

    url: str
    version: Version
    members: tuple[Member, ...]


class Step(Model):
    """One attempt of one step of a run, with the versions taken just before and just after it."""

    step_id: str  # the workflow node id
    name: str | None = None
    attempt: int = 0
    node: str | None = None
    guarded: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: Outcome | None = None
    before: Version | None = None
    after: Version | None = None


class Lineage(Model):
    """A run: its initial version, then its steps in the order they started."""

    file: RunFile
    initial: Version | None = None
    steps: tuple[Step, ...] = ()


class SearchHit(Model):
    kind: Literal["bucket", "file", "version"]
    url: str
    title: str
    bucket: str
    file: str | None = None
    version: str | None = None


class Buckets(Model):
    items: tuple[Bucket, ...] = ()


class Files(Model):
    items: tuple[RunFile, ...] = ()


class Versions(Model):
    items: tuple[Version, ...] = ()


class Found(Model):
    """The answer of ``find``: the version, or None when the registry has not recorded it (yet)."""

    version: Version | None = None


class SearchHits(Model):
    items: tuple[SearchHit, ...] = ()


# --- requests ----------------------------------------------------------------------------------------------


class Query(Model):
    namespace: Name


class ListBuckets(Query):
    pass


class ListFiles(Query):
    bucket: Name


class ListVersions(Query):
    bucket: Name
    file: Name


class GetVersion(Query):
    url: str


class Resolve(Query):
    url: str


class GetLineage(Query):
    bucket: Name
    file: Name


class FindVersion(Query):
    """The version of one step's phase of a run (``step_id`` None: the run's initial version).

    ``attempt`` None means the latest attempt recorded.
    """

    workflow_uid: Name
    step_id: str | None = None
    phase: Phase
    attempt: int | None = None


class Search(Query):
    text: str = Field(min_length=1, max_length=500)
    limit: int = Field(50, ge=1, le=500)


# query name → (request model, result model); the subject is subjects.registry_query(name)
QUERIES: dict[str, tuple[type[Query], type[Model]]] = {
    "buckets": (ListBuckets, Buckets),
    "files": (ListFiles, Files),
    "versions": (ListVersions, Versions),
    "version": (GetVersion, Version),
    "resolve": (Resolve, Resolved),
    "lineage": (GetLineage, Lineage),
    "find": (FindVersion, Found),
    "search": (Search, SearchHits),
}


# --- replies -----------------------------------------------------------------------------------------------


class ErrorBody(Model):
    kind: ErrorKind
    message: str


class Reply(BaseModel):
    """What the registry answers on NATS: exactly one of ``result`` and ``error``."""

    model_config = ConfigDict(extra="forbid")

    result: dict[str, Any] | None = None
    error: ErrorBody | None = None


_ERRORS: dict[str, type[PermanentError] | type[TemporaryError]] = {
    "not_found": NotFound,
    "forbidden": Forbidden,
    "invalid": InvalidRequest,
    "unavailable": TemporaryError,
}


def error_body(error: Exception) -> ErrorBody:
    """The typed error body for an exception the query layer raised (the inverse of :func:`raise_error`)."""
    if isinstance(error, Forbidden):
        return ErrorBody(kind="forbidden", message=str(error))
    if isinstance(error, NotFound):
        return ErrorBody(kind="not_found", message=str(error))
    if isinstance(error, TemporaryError):
        return ErrorBody(kind="unavailable", message=str(error))
    return ErrorBody(kind="invalid", message=str(error))


def raise_error(body: ErrorBody) -> None:
    raise _ERRORS[body.kind](body.message)


T = TypeVar("T", bound=Model)


class RegistryClient:
    """Ask the registry over NATS request-reply, within one namespace.

    Raises :class:`~rokcommon.errors.NotFound`, :class:`~rokcommon.errors.Forbidden` or
    :class:`~rokcommon.errors.InvalidRequest` (:class:`InvalidUrl` for a malformed URL, before asking), and
    :class:`~rokcommon.errors.TemporaryError` when no registry answers within ``timeout`` seconds or it cannot
    answer now (its database is down).
    """

    def __init__(self, nc: Client, namespace: str, *, timeout: float = 10.0) -> None:
        self.nc = nc
        self.namespace = namespace
        self.timeout = timeout

    async def list_buckets(self) -> list[Bucket]:
        return list((await self._ask("buckets", Buckets)).items)

    async def list_files(self, bucket: str) -> list[RunFile]:
        return list((await self._ask("files", Files, bucket=bucket)).items)

    async def list_versions(self, bucket: str, file: str) -> list[Version]:
        return list((await self._ask("versions", Versions, bucket=bucket, file=file)).items)

    async def get_version(self, url: str) -> Version:
        parse_url(url)
        return await self._ask("version", Version, url=url)

    async def resolve(self, url: str) -> Resolved:
        parse_url(url)
        return await self._ask("resolve", Resolved, url=url)

    async def lineage(self, bucket: str, file: str) -> Lineage:
        return await self._ask("lineage", Lineage, bucket=bucket, file=file)

    async def find_version(
        self, workflow_uid: str, step_id: str | None, phase: Phase, *, attempt: int | None = None
    ) -> Version | None:
        found = await self._ask("find", Found, workflow_uid=workflow_uid, step_id=step_id, phase=phase, attempt=attempt)
        return found.version

    async def search(self, text: str, *, limit: int = 50) -> list[SearchHit]:
        return list((await self._ask("search", SearchHits, text=text, limit=limit)).items)

    async def _ask(self, name: str, result: type[T], **fields: Any) -> T:
        request_model, _ = QUERIES[name]
        request = request_model(namespace=self.namespace, **fields)
        subject = subjects.registry_query(name)
        with tracer.start_as_current_span(
            f"{subject} request",
            kind=SpanKind.CLIENT,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject},
        ):
            headers: dict[str, str] = {}
            propagate.inject(headers)
            try:
                msg = await self.nc.request(
                    subject, request.model_dump_json().encode(), timeout=self.timeout, headers=headers
                )
            except NoRespondersError:
                raise TemporaryError(
                    f"no registry answers on {subject}: is rok-registry running (rok up)?", delay=1.0
                ) from None
            except (TimeoutError, NatsTimeoutError):
                raise TemporaryError(
                    f"the registry did not answer {name} within {self.timeout:g}s", delay=1.0
                ) from None
        reply = Reply.model_validate_json(msg.data)
        if reply.error is not None:
            raise_error(reply.error)
        return result.model_validate(reply.result or {})
