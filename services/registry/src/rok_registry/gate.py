"""Who asks the registry over HTTP, and whether they may: the one gate every API call and page goes through.

The app's middleware (:func:`install`) runs before any handler and, in this order:

1. answers the health probes and static files at once (``/healthz``, ``/livez``, ``/readyz``, ``/static/``,
   the API docs): they hold nothing of anyone;
2. refuses a ``Host`` that is not one of the configured names (``ROK_REGISTRY_HOSTS``; loopback names always),
   so that a page whose DNS name was rebound to this address cannot talk to it;
3. bounds the request: a query string over :data:`MAX_QUERY` bytes is 414, a body over :data:`MAX_BODY` 413,
   a body of unknown length 411;
4. identifies the caller (:class:`Gate`): in a cluster by the gateway's header (``kubeflow-userid``, its prefix
   stripped), else a bearer token checked by TokenReview (service accounts); on one machine by the token ``rok up``
   wrote into the state directory, given as a bearer token, as ``?token=`` once (answered with a cookie, HttpOnly
   and SameSite=Strict, and a redirect to the same address without it, as Jupyter does) or as that cookie.
   Nobody identified: 401;
5. refuses a state-changing request (anything but GET, HEAD, OPTIONS) whose ``Origin`` (or, without one,
   ``Referer``) is not this very host, unless it came with a bearer token — a token is never sent by a browser
   on its own, a cookie or the gateway's header are.

Each handler then names its namespace and what it does there: :func:`authorize` checks the permission
(:mod:`rokcommon.authz`) and raises :class:`~rokcommon.errors.Forbidden` (403), whose message says what is
missing and nothing of what the namespace holds. The JSON API does that once for all its routes (a dependency of
its router, :func:`readable_namespace`).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from rokcommon.authz import READ, Access, Identity, LocalAccess, Permission, require
from rokcommon.errors import TemporaryError

log = logging.getLogger(__name__)

COOKIE = "rok_token"
MAX_QUERY = 4096  # bytes of a query string: a rok:// URL and a search text fit many times over
MAX_BODY = 64 * 1024  # bytes of a request body: a restore request is a few hundred
LOOPBACK = ("127.0.0.1", "localhost", "::1")
OPEN = ("/healthz", "/livez", "/readyz", "/static/", "/api/docs", "/api/openapi.json")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass
class Gate:
    """How this registry identifies callers; ``hosts`` are the names it answers to besides loopback."""

    access: Access
    header: str = "kubeflow-userid"
    prefix: str = ""
    hosts: tuple[str, ...] = ()
    _any_host: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.header = self.header.lower()
        self._any_host = "*" in self.hosts

    def host_allowed(self, host: str) -> bool:
        name = _host_name(host)
        return self._any_host or name in LOOPBACK or name in self.hosts

    async def identify(self, request: Request) -> tuple[Identity | None, str]:
        """The caller, and how they proved it: "header", "bearer", "cookie", "query"; (None, "") if unknown.

        In a cluster the gateway's header comes first, then a bearer token, as KFP's API server takes them: the
        gateway may pass the person's own token along with its header, and that token need not be one the API
        server knows.
        """
        if self.access.mode == "cluster":
            values = request.headers.getlist(self.header)
            if values:
                if len(values) != 1 or not values[0].startswith(self.prefix):
                    return None, ""
                user = values[0][len(self.prefix) :].strip()
                return (Identity(user), "header") if user else (None, "")
        bearer = _bearer(request.headers.get("authorization", ""))
        if bearer:
            return await self.access.authenticate(bearer), "bearer"
        if self.access.mode == "cluster":
            return None, ""
        token = request.query_params.get("token")
        if token:
            return await self.access.authenticate(token), "query"
        cookie = request.cookies.get(COOKIE, "")
        return (await self.access.authenticate(cookie), "cookie") if cookie else (None, "")


def install(app: FastAPI, gate: Gate) -> None:
    """Put ``gate`` in front of every route of ``app``."""
    app.state.gate = gate

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if path in OPEN or path.startswith("/static/"):
            return await call_next(request)
        if not gate.host_allowed(request.headers.get("host", "")):
            log.warning("refused a request for host %r", request.headers.get("host", ""), extra={"refused": "host"})
            return _refusal(request, 400, "invalid", "this registry does not answer to that host name")
        refused = _bounds(request)
        if refused is not None:
            return refused
        try:
            who, how = await gate.identify(request)
        except TemporaryError as error:  # the API server did not answer a TokenReview: nobody is let in meanwhile
            return _refusal(request, 503, "unavailable", str(error))
        if who is None:
            return _refusal(request, 401, "unauthenticated", _sign_in(gate))
        if how == "query" and request.method == "GET":
            return _with_cookie(request)
        if request.method not in SAFE_METHODS and how != "bearer" and not _same_origin(request):
            origin = request.headers.get("origin") or request.headers.get("referer")
            log.warning("refused a cross-site %s %s from %r", request.method, path, origin, extra={"user": who.user})
            return _refusal(request, 403, "forbidden", "a state-changing request must come from this site's pages")
        request.state.identity = who
        return await call_next(request)


def identity(request: Request) -> Identity:
    """The caller the gate identified (every route behind it has one)."""
    who: Identity = request.state.identity
    return who


async def authorize(request: Request, namespace: str, permission: Permission = READ) -> Identity:
    """The caller, if they hold ``permission`` in ``namespace``; else :class:`~rokcommon.errors.Forbidden`."""
    who = identity(request)
    await require(request.app.state.gate.access, who, namespace, permission)
    return who


async def readable_namespace(request: Request, namespace: str) -> None:
    """A dependency of every route under ``/api/v1/namespaces/{namespace}``: the caller may read there."""
    await authorize(request, namespace)


def locked() -> Gate:
    """A gate no token opens (for an app built without one): only the open paths answer."""
    return Gate(LocalAccess(token=""))


def _bearer(value: str) -> str:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8470
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _bounds(request: Request) -> Response | None:
    if len(request.url.query.encode()) > MAX_QUERY:
        return _refusal(request, 414, "invalid", f"the query string is longer than {MAX_QUERY} bytes")
    if request.method in SAFE_METHODS:
        return None
    length = request.headers.get("content-length")
    if length is None:
        if request.headers.get("transfer-encoding"):
            return _refusal(request, 411, "invalid", "a request body must say its length (Content-Length)")
        return None
    if not length.isdigit() or int(length) > MAX_BODY:
        return _refusal(request, 413, "invalid", f"a request body may hold at most {MAX_BODY} bytes")
    return None


def _same_origin(request: Request) -> bool:
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    parts = urlsplit(source)
    return bool(parts.netloc) and parts.netloc.lower() == request.headers.get("host", "").lower()


def _with_cookie(request: Request) -> Response:
    """The same address without ``?token=``, and the token as a cookie from now on."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
    response = RedirectResponse(target, status_code=303)
    token = request.query_params["token"]
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


def _sign_in(gate: Gate) -> str:
    if gate.access.mode == "cluster":
        return "sign in: requests reach rok through Kubeflow's gateway, or with a service account's bearer token"
    return "sign in: open the address `rok up` printed (it carries the token), or send the token of `rok status`"


def _refusal(request: Request, status: int, kind: str, message: str) -> Response:
    if request.url.path.startswith(("/api/", "/restores")) or request.method not in SAFE_METHODS:
        return JSONResponse({"error": {"kind": kind, "message": message}}, status_code=status)
    body = f"<!doctype html><title>rok</title><h1>{status}</h1><p>{html.escape(message)}</p>"
    return Response(body, status_code=status, media_type="text/html")
