"""Who asks, and what they may do in a namespace: the checks the registry and the restorer share.

A person or a workload is an :class:`Identity`. What rok lets them do is expressed as a :class:`Permission` that
Kubeflow's profile roles already grant (``kubeflow-edit`` and ``kubeflow-view``, aggregated into each profile's
RoleBindings), so nobody has to grant anything new for rok:

=====================  ============================================  ======================================
what rok is asked      permission checked in the namespace           granted by
=====================  ============================================  ======================================
read lineage, list,    ``list`` ``persistentvolumeclaims``           kubeflow-view (and so kubeflow-edit)
show, search, diff
restore into a PVC     ``create`` ``persistentvolumeclaims``         kubeflow-edit
restore into a new     ``create`` ``notebooks.kubeflow.org``         kubeflow-edit
notebook server
pin, unpin             ``patch`` ``persistentvolumeclaims``          kubeflow-edit
forget                 ``delete`` ``persistentvolumeclaims``         kubeflow-edit
name a new bucket      ``create`` ``runs.pipelines.kubeflow.org``    kubeflow-edit (KFP's own part of it)
(``rok submit``)
=====================  ============================================  ======================================

rok versions volumes, so reading its lineage is reading what the namespace's claims held: whoever may list the
claims may read their snapshots. A restore reads the source (``READ`` in the version's namespace) and creates in
the target's. A bucket is named when the first run of its experiment is recorded, or when ``rok submit`` asks
for it before it starts that run in KFP: whoever may start a run there (as KFP's API server checks it) may have the
registry name its bucket.

Two modes (``ROK_AUTH``): ``local`` — one machine, one user, who holds the token ``rok up`` wrote into the state
directory and may use every namespace (:class:`LocalAccess`); ``cluster`` — tokens are checked by TokenReview
and every permission by a SubjectAccessReview to the Kubernetes API (:class:`KubernetesAccess`), each answer
cached for ``ROK_ACCESS_CACHE_SECONDS`` (30 s), keyed by user, groups, namespace and permission.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import hmac
import logging
import os
import tempfile
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rokcommon import kube
from rokcommon.errors import Forbidden, TemporaryError
from rokcommon.settings import split_roots

log = logging.getLogger(__name__)

Mode = Literal["local", "cluster"]


@dataclass(frozen=True)
class Identity:
    """A person (the gateway's user id, or the local user) or a workload (``system:serviceaccount:<ns>:<name>``)."""

    user: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Permission:
    """A verb on a resource of a namespace, as a SubjectAccessReview asks it."""

    verb: str
    resource: str
    group: str = ""
    what: str = ""  # what rok calls it, for messages: "read", "restore into a PVC"

    def __str__(self) -> str:
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {resource}"


READ = Permission("list", "persistentvolumeclaims", what="read rok's lineage")
RESTORE_INTO_PVC = Permission("create", "persistentvolumeclaims", what="restore into a new PVC")
RESTORE_INTO_NOTEBOOK = Permission("create", "notebooks", "kubeflow.org", what="restore into a new notebook server")
# Forgetting removes what the claims held, as deleting a claim does; a pin changes what is kept, as a patch does.
FORGET = Permission("delete", "persistentvolumeclaims", what="forget rok's versions")
PIN = Permission("patch", "persistentvolumeclaims", what="pin or unpin rok's versions")
# A bucket is named for a run about to start: the right KFP's API server checks to start one.
START_RUN = Permission("create", "runs", "pipelines.kubeflow.org", what="start a pipeline run")


class AccessSettings(BaseSettings):
    """How identities are checked (``ROK_*`` environment variables); the defaults are the one-machine mode."""

    model_config = SettingsConfigDict(env_prefix="ROK_", extra="ignore", frozen=True)

    auth: Mode = Field("local", description="local (one user, the token rok up writes) or cluster (Kubernetes RBAC)")
    kube: Literal["off", "incluster", "kubeconfig"] = Field(
        "off", description="where the Kubernetes API is: off, incluster, or kubeconfig"
    )
    kubeconfig: Path | None = Field(None, description="kubeconfig file (kube=kubeconfig); default ~/.kube/config")
    access_cache_seconds: float = Field(30.0, ge=0, description="seconds an access review's answer is reused")
    restore_roots: str = Field(
        "", description="local mode: directories (':'-separated) restores may write under; default: home and tmp"
    )

    @property
    def roots(self) -> tuple[Path, ...]:
        """The directories a local restore may write under (never a symlink out of them)."""
        given = [Path(p).expanduser() for p in split_roots(self.restore_roots)]
        return tuple(given or (Path.home(), Path(tempfile.gettempdir())))


class Access(Protocol):
    """Authenticates tokens and answers whether an identity holds a permission in a namespace."""

    mode: Mode

    async def authenticate(self, token: str) -> Identity | None: ...

    async def allowed(self, who: Identity, namespace: str, permission: Permission) -> bool: ...


class LocalAccess:
    """One machine, one user: whoever proved to be the local user may use every namespace."""

    mode: Mode = "local"

    def __init__(self, token: str, user: str = "") -> None:
        self._token = token
        self.user = user or _login()

    async def authenticate(self, token: str) -> Identity | None:
        if token and self._token and _same(token, self._token):
            return Identity(self.user)
        return None

    async def allowed(self, who: Identity, namespace: str, permission: Permission) -> bool:
        return True


class _Ttl:
    """A small cache of answers that expire ``ttl`` seconds after they were given."""

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._entries: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return False, None
        return True, entry[1]

    def put(self, key: Hashable, value: Any) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.size:
            now = time.monotonic()
            self._entries = {k: e for k, e in self._entries.items() if e[0] >= now}
            if len(self._entries) >= self.size:
                self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, value)


class KubernetesAccess:
    """TokenReview and SubjectAccessReview through the ``kubernetes`` client, each answer cached for ``ttl`` s.

    ``api_client`` is a ``kubernetes.client.ApiClient``; the calls run in threads (the client is synchronous).
    The caller's own RBAC must allow ``create`` on ``tokenreviews`` and ``subjectaccessreviews``.
    """

    mode: Mode = "cluster"

    def __init__(self, api_client: Any, *, ttl: float = 30.0, audiences: tuple[str, ...] = ()) -> None:
        from kubernetes import client  # the cluster side only: a local process never loads the client

        self._client = client
        self._authentication = client.AuthenticationV1Api(api_client)
        self._authorization = client.AuthorizationV1Api(api_client)
        self._audiences = list(audiences) or None
        self._tokens = _Ttl(ttl)
        self._reviews = _Ttl(ttl)

    async def authenticate(self, token: str) -> Identity | None:
        key = hashlib.sha256(token.encode()).hexdigest()  # the cache never holds the token itself
        hit, cached = self._tokens.get(key)
        if hit:
            return cached
        body = self._client.V1TokenReview(spec=self._client.V1TokenReviewSpec(token=token, audiences=self._audiences))
        status = (await self._call(self._authentication.create_token_review, body)).status
        who = None
        if status is not None and status.authenticated and status.user is not None and status.user.username:
            who = Identity(status.user.username, tuple(status.user.groups or ()))
        self._tokens.put(key, who)
        return who

    async def allowed(self, who: Identity, namespace: str, permission: Permission) -> bool:
        key = (who.user, who.groups, namespace, permission.verb, permission.group, permission.resource)
        hit, cached = self._reviews.get(key)
        if hit:
            return bool(cached)
        c = self._client
        body = c.V1SubjectAccessReview(
            spec=c.V1SubjectAccessReviewSpec(
                user=who.user,
                groups=list(who.groups) or None,
                resource_attributes=c.V1ResourceAttributes(
                    namespace=namespace, verb=permission.verb, group=permission.group, resource=permission.resource
                ),
            )
        )
        status = (await self._call(self._authorization.create_subject_access_review, body)).status
        answer = bool(status is not None and status.allowed and not status.denied)
        self._reviews.put(key, answer)
        return answer

    async def _call(self, method: Any, body: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return await asyncio.to_thread(method, body)
        except ApiException as error:
            raise TemporaryError(
                f"the Kubernetes API did not answer an access review ({error.status} {error.reason}); try again"
            ) from None
        except (OSError, HTTPError) as error:  # the connection failed (urllib3 gave up retrying)
            raise TemporaryError(
                f"cannot reach the Kubernetes API for an access review ({type(error).__name__}); try again"
            ) from None


async def require(access: Access, who: Identity, namespace: str, permission: Permission) -> None:
    """Raise :class:`Forbidden` unless ``who`` holds ``permission`` in ``namespace``.

    The message names the user, the namespace and the permission, never what the namespace holds: it is the
    same whether or not anything asked for exists there.
    """
    if not await access.allowed(who, namespace, permission):
        log.info(
            "access refused: %s may not %s in namespace %s",
            who.user,
            permission,
            namespace,
            extra={"user": who.user, "namespace": namespace, "permission": str(permission)},
        )
        raise Forbidden(
            f"{who.user} may not {permission.what or permission} in namespace {namespace!r} "
            f"(it needs {permission} there)"
        )


def inside_roots(path: str, roots: tuple[Path, ...]) -> Path:
    """``path`` made absolute and free of ``..`` and of symlinks, if it lies under one of ``roots``; else Forbidden.

    Every symlink on the way is resolved before the check, so a link inside a root that points out of it does
    not lead there; a path that does not exist yet is judged by what its existing parents resolve to.
    """
    given = Path(path)
    if not given.is_absolute():
        raise Forbidden(f"restore target {path!r} must be an absolute directory path")
    resolved = Path(os.path.realpath(given))
    for root in roots:
        base = Path(os.path.realpath(root))
        if resolved == base or base in resolved.parents:
            return resolved
    allowed = ", ".join(str(r) for r in roots)
    raise Forbidden(
        f"restore target {path} is outside the directories restores may write ({allowed}); "
        "choose a directory under one of them, or set ROK_RESTORE_ROOTS"
    )


def access_for(settings: AccessSettings, *, local_token: str = "", api_client: Any = None) -> Access:
    """The :class:`Access` of a process: local with the given token, or the cluster's Kubernetes API."""
    if settings.auth == "local":
        return LocalAccess(local_token)
    if api_client is None:
        api_client = kube.api_client(
            settings.kube, settings.kubeconfig, needed_by="ROK_AUTH=cluster (checking identities)"
        )
    return KubernetesAccess(api_client, ttl=settings.access_cache_seconds)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"
