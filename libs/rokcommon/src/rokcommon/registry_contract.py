"""The registry's query contract: what can be asked (:data:`QUERIES`), what comes back, and how errors travel.

Every query is a request model carrying the caller's ``namespace``, sent to ``rok.registry.<query>.v1``
(:data:`QUERIES` maps each query name to its request and result models). The reply is a :class:`Reply`: either
a ``result`` or a typed ``error`` whose kind (:data:`ERROR_KINDS`) names the exception it stands for. The registry's
HTTP API (``/api/v1/namespaces/{ns}/...``) returns the same result models as JSON.

Lists come in pages (:class:`PageQuery` → :class:`Page`): at most ``limit`` items, newest first unless
``order="oldest"``, and ``next`` / ``prev``, opaque cursors of the pages after and before (None at either end).
A cursor names the last item seen, not a position, so items recorded meanwhile shift no page. A page may hold
fewer than ``limit`` items: it is filled only up to what one reply may carry, so no reply outgrows the bus's
payload limit whatever the data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rokcommon.durations import parse_duration
from rokcommon.errors import (
    AnswerTooLarge,
    Forbidden,
    InvalidRequest,
    NotFound,
    QueryFailed,
    RokError,
    TemporaryError,
)
from rokcommon.events import Model, Name, Outcome, Phase, SnapshotChanges, Tag
from rokcommon.notebooks import NotebookServer

VersionStatus = Literal["pending", "complete", "partial"]  # pending: not every volume recorded yet
RunStatus = Literal["running", "succeeded", "failed", "error"]
# unavailable: e.g. its database is down; too_large: the answer would not fit in one bus message; failed: the
# service's own fault (an unexpected error), named in the message
ErrorKind = Literal["not_found", "forbidden", "invalid", "unavailable", "too_large", "failed"]


# --- results -----------------------------------------------------------------------------------------------


class Bucket(Model):
    """One per KFP experiment (runs without one go to the namespace's ``default-…`` bucket)."""

    namespace: str
    name: str
    url: str
    experiment: str | None = None
    created_at: datetime
    files: int = 0
    pinned: bool = False  # no forget removes it (rok pin)
    suffix: str = ""  # the random part of its name (``<experiment>-<suffix>``), which its runs' names carry


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
    metrics: dict[str, float] = {}  # what the run's steps reported (a notebook's pipeline-metrics)
    pinned: bool = False


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
    changes: SnapshotChanges | None = None  # what the snapshot changed since the volume's previous one, if recorded


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
    # the notebook server the run came from, as recorded when it started (the initial version's; a step's
    # versions carry their run's): what a restore into a new notebook server rebuilds (rokcommon.notebooks)
    notebook: NotebookServer | None = None
    pinned: bool = False

    @property
    def committed(self) -> bool:
        """Every volume is recorded (stored or failed): what a step guard waits for."""
        return self.status != "pending"


class Resolved(Model):
    """What a URL stands for: the version, and the members it names (all, or the one of ``&volume=``)."""

    url: str
    version: Version
    members: tuple[Member, ...]
    metrics: dict[str, float] = {}  # the metrics of the version's run


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
    """A run: its initial version, then its steps in the order they started (a page of them: ``next``)."""

    file: RunFile
    initial: Version | None = None
    steps: tuple[Step, ...] = ()
    next: str | None = None  # the cursor of the steps that follow, if any
    prev: str | None = None


class SearchHit(Model):
    kind: Literal["bucket", "file", "version"]
    url: str
    title: str
    bucket: str
    file: str | None = None
    version: str | None = None


class Page(Model):
    """One page of a list: ``next`` and ``prev`` are the cursors of the pages after and before it, if any."""

    next: str | None = None
    prev: str | None = None
    total: int = 0  # items in the whole list (with the query's filters)


class Buckets(Page):
    items: tuple[Bucket, ...] = ()


class Files(Page):
    items: tuple[RunFile, ...] = ()


class Versions(Page):
    items: tuple[Version, ...] = ()


class Found(Model):
    """The answer of ``find``: the version, or None when the registry has not recorded it (yet)."""

    version: Version | None = None


class SearchHits(Model):
    items: tuple[SearchHit, ...] = ()


# --- requests ----------------------------------------------------------------------------------------------


class Query(Model):
    namespace: Name


Order = Literal["newest", "oldest"]
DEFAULT_PAGE = 50  # items a page holds unless asked otherwise
MAX_PAGE = 500  # items a page holds at most (fewer when they would not fit in one reply)
CURSOR_LENGTH = 512  # characters a cursor may take


class PageQuery(Query):
    """A list query: one page of ``limit`` items after (or before) ``cursor``, a cursor of a page before."""

    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(None, max_length=CURSOR_LENGTH)
    order: Order = "newest"


class ListBuckets(PageQuery):
    pass


class ListFiles(PageQuery):
    bucket: Name
    status: RunStatus | None = None  # only runs in this state


class ListVersions(PageQuery):
    bucket: Name
    file: Name
    step: str | None = Field(None, max_length=253)  # only this step's versions (its name, or its node id)
    status: VersionStatus | None = None


class GetVersion(Query):
    url: str


class Resolve(Query):
    url: str


class GetLineage(Query):
    """A run's lineage: ``limit`` steps (in the order they started) after ``cursor``."""

    bucket: Name
    file: Name
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(None, max_length=CURSOR_LENGTH)


class FindVersion(Query):
    """The version of one step's phase of a run (``step_id`` None: the run's initial version).

    ``attempt`` None means the latest attempt recorded.
    """

    workflow_uid: Name
    step_id: str | None = None
    phase: Phase
    attempt: int | None = None


SEARCH_TEXT_MAX = 500  # characters of a search query: longer than any name, URL or id it could match


class Search(Query):
    text: str = Field(min_length=1, max_length=SEARCH_TEXT_MAX)
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


# --- retention: forgetting, pins, and what the store's gc may remove ---------------------------------------
#
# Sent to ``rok.registry.retention.<name>.v1`` (:data:`RETENTION`), apart from the queries: they change what the
# registry keeps, or (``snapshots``) span every namespace, so the bus lets fewer users ask them.


class KeepRules(Model):
    """What a forget keeps, as restic's ``forget`` does: whatever any rule keeps stays.

    A run is kept whole when it is among the ``keep_last`` newest runs of its bucket, started within
    ``keep_within`` of the bucket's newest run (restic measures from the newest snapshot, not from now, so an
    experiment nobody runs any more keeps its last runs), is pinned (or its bucket is), or is still running.
    Of every other run, the versions tagged one of ``keep_tags`` and the pinned ones stay; the rest go, and a run
    left with no version goes too.
    """

    keep_last: int | None = Field(None, ge=1, le=1_000_000)
    keep_within: str | None = Field(None, max_length=64)
    keep_tags: tuple[Tag, ...] = ("final", "failed")

    @field_validator("keep_within")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        try:
            return None if value is None else str(parse_duration(value))
        except InvalidRequest as error:  # a validation error like any other field's
            raise ValueError(str(error)) from None

    def describe(self) -> str:
        """The rules as the CLI writes them: ``keep-last 5, keep-within 30d, keep-tag final,failed``."""
        parts = [f"keep-last {self.keep_last}"] if self.keep_last else []
        parts += [f"keep-within {self.keep_within}"] if self.keep_within else []
        parts.append(f"keep-tag {','.join(self.keep_tags)}" if self.keep_tags else "no keep-tag")
        return ", ".join(parts)


class Forget(Query):
    """Forget the runs and versions of ``bucket`` (every bucket of the namespace when None) that no rule keeps.

    ``keep_last`` or ``keep_within`` must be given: a forget with neither would keep nothing but tags and pins.
    ``dry_run`` reports what would go and changes nothing.
    """

    bucket: Name | None = None
    rules: KeepRules
    dry_run: bool = False
    requested_by: str = Field("", max_length=253)


class ForgottenRun(Model):
    """One run a forget removed versions of: ``whole`` when the run itself went (no version of it was kept)."""

    bucket: str
    file: str
    url: str
    whole: bool
    versions_forgotten: int
    versions_kept: int


class ForgetReport(Model):
    """What a forget removed (or, with ``dry_run``, would remove). ``runs`` lists at most what one reply carries:
    ``runs_listed`` < ``runs_forgotten`` says some were left out of the list (not out of the forget)."""

    namespace: str
    dry_run: bool
    rules: str  # as KeepRules.describe writes them
    by: str
    at: datetime
    runs_forgotten: int = 0  # runs that lost at least one version
    runs_removed: int = 0  # runs that went whole
    versions_forgotten: int = 0
    snapshots_forgotten: int = 0  # volume snapshots the store's gc may now remove
    bytes_forgotten: int = 0  # bytes the forgotten versions held (shared content stays while others hold it)
    runs_listed: int = 0
    runs: tuple[ForgottenRun, ...] = ()


class ForgetRecord(Model):
    """One forget that removed something from one bucket, as the registry recorded it."""

    bucket: str | None
    rules: str
    by: str
    at: datetime
    runs: int
    versions: int
    snapshots: int


class ForgetLog(Model):
    """The namespace's latest forgets, newest first."""

    items: tuple[ForgetRecord, ...] = ()


class Pin(Query):
    """Pin (or with ``pinned`` False, unpin) what ``url`` names: a bucket, a run or a version. No forget removes
    what is pinned, nor anything inside it."""

    url: str = Field(max_length=2048)
    pinned: bool = True
    requested_by: str = Field("", max_length=253)


class Pinned(Model):
    url: str
    kind: Literal["bucket", "file", "version"]
    pinned: bool


SNAPSHOTS_ASKED = 4096  # snapshot ids one ``snapshots`` request may ask about


class SnapshotStates(BaseModel):
    """The store's gc asks which of its snapshots the registry still records (in any namespace).

    The asker sends the ids it holds, a batch at a time, so the answer (a part of what was asked) is never larger
    than the question: no page, no cursor, and nothing recorded meanwhile is skipped.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ids: tuple[str, ...] = Field(max_length=SNAPSHOTS_ASKED)


class SnapshotsKnown(Model):
    """Of the ids asked: ``recorded``, a version still holds them; ``forgotten``, a forget removed every version
    that held them. An id in neither the registry never recorded (an orphan, or one still being recorded)."""

    recorded: tuple[str, ...] = ()
    forgotten: tuple[str, ...] = ()


# retention request name → (request model, result model); the subject is subjects.registry_retention(name)
RETENTION: dict[str, tuple[type[BaseModel], type[Model]]] = {
    "forget": (Forget, ForgetReport),
    "pin": (Pin, Pinned),
    "snapshots": (SnapshotStates, SnapshotsKnown),
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


# error kind → the exception it stands for, the most specific first: an exception is sent as the first kind it is
# an instance of (any other RokError as "invalid", anything else as "failed"), and a kind is raised as its exception.
ERROR_KINDS: tuple[tuple[ErrorKind, type[RokError]], ...] = (
    ("forbidden", Forbidden),
    ("not_found", NotFound),
    ("unavailable", TemporaryError),
    ("too_large", AnswerTooLarge),
    ("invalid", InvalidRequest),
    ("failed", QueryFailed),
)


def error_body(error: Exception) -> ErrorBody:
    """The typed error body for an exception the query layer raised (the inverse of :func:`raise_error`).

    An exception that is no :class:`~rokcommon.errors.RokError` is a fault of the answering service: it is sent
    as ``failed``, its type named, so the asker learns what went wrong instead of waiting for a reply.
    """
    if not isinstance(error, RokError):
        return ErrorBody(kind="failed", message=f"{type(error).__name__}: {error}")
    kind = next((kind for kind, cls in ERROR_KINDS if isinstance(error, cls)), "invalid")
    return ErrorBody(kind=kind, message=str(error))


REPLY_HEADROOM = 4096  # bytes of a reply's message left for the headers a responder adds


def reply_budget(max_payload: int) -> int:
    """The bytes a reply's payload may take: the server's ``max_payload`` less room for the reply's headers."""
    return max(max_payload - REPLY_HEADROOM, max_payload // 2)


def encode_reply(reply: Reply, budget: int, what: str = "the request") -> bytes:
    """The reply as sent; one larger than ``budget`` (see :func:`reply_budget`) becomes a ``too_large`` error
    that says so, for the asker to narrow the request, instead of a reply that never arrives."""
    data = reply.model_dump_json().encode()
    if len(data) <= budget:
        return data
    too_large = AnswerTooLarge(
        f"the answer to {what} is {len(data)} bytes, more than one bus message carries ({budget} bytes): "
        "ask for less (a smaller page: limit)"
    )
    return Reply(error=error_body(too_large)).model_dump_json().encode()


def raise_error(body: ErrorBody) -> None:
    raise dict(ERROR_KINDS)[body.kind](body.message)
