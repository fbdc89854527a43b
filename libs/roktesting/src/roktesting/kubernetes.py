"""A fake Kubernetes API server for tests: the real list/watch wire protocol, objects in memory.

Nothing real can run a Kubernetes API server here, so this one speaks the protocol the official
``kubernetes`` client expects, on 127.0.0.1:

* ``GET`` a collection → a ``<Kind>List`` with ``metadata.resourceVersion``; ``labelSelector`` (``k``,
  ``k=v``, ``k!=v``, ``!k``) and ``fieldSelector=metadata.name=…`` filter it.
* ``GET …?watch=true`` → chunked JSON lines ``{"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": …}``
  from ``resourceVersion`` on (without one: the current objects as ``ADDED`` first). A version older than
  the last :meth:`FakeKube.compact` gets an ``ERROR`` event with a ``Status`` of code 410 (Gone), as the
  real server answers. ``allowWatchBookmarks=true`` watches get ``BOOKMARK`` events on :meth:`bookmark`;
  ``timeoutSeconds`` ends the stream cleanly.
* ``POST`` creates (``uid``, ``resourceVersion``, ``creationTimestamp``, ``generateName``), ``GET`` one,
  ``PUT`` replaces, ``PATCH`` merges (JSON merge patch, or a JSON patch when the body is a list),
  ``DELETE`` removes; every change is a watch event. Any path of the form
  ``/api/v1[/namespaces/NS]/PLURAL[/NAME[/status]]`` or ``/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME]``
  works, so custom resources (Argo ``workflows``, Kubeflow ``notebooks``) need no registration.
* ``POST`` a TokenReview (``authentication.k8s.io/v1``) or a SubjectAccessReview (``authorization.k8s.io/v1``)
  → the answer a real API server gives, from the tokens a test registered (``fake_kube.tokens``) and the RBAC
  objects stored here (Roles, ClusterRoles, RoleBindings, ClusterRoleBindings; see :mod:`roktesting.rbac`).

Faults for tests: :meth:`drop_watches` breaks every open watch mid-stream (a half-sent chunk, then the
socket closes); :meth:`hold_watches` makes new watch requests wait until the block ends.

The ``fake_kube`` fixture yields a started :class:`FakeKube`; ``fake_kube.api_client`` is a
``kubernetes.client.ApiClient`` configured for it, and ``fake_kube.requests`` records what was asked.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from roktesting import rbac
from roktesting.kube_resources import CRDS, ResourceTypes

__all__ = ["FakeKube", "fake_kube"]

# What GET /version answers (every field of the API server's version.Info)
VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "70d3cc986aa8221cd1dfb1121852688902d3bf53",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T17:59:15Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_PATH = re.compile(
    r"^/(?P<api>api/v1|apis/[^/]+/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$"
)

Key = tuple[str, str, str | None, str]  # api, plural, namespace, name


@dataclass
class _Change:
    rv: int
    type: str
    key: Key
    obj: dict[str, Any]


@dataclass
class _Request:
    method: str
    path: str
    params: dict[str, str]


@dataclass
class FakeKube:
    """The server's state; every public method is safe to call from any thread."""

    host: str = "127.0.0.1"
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    requests: list[_Request] = field(default_factory=list)
    reactions: dict[str, list[Callable[[dict[str, Any]], None]]] = field(default_factory=dict)
    tokens: rbac.Tokens = field(default_factory=rbac.Tokens)
    types: ResourceTypes = field(default_factory=ResourceTypes)

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._rv = 1000
        self._oldest = 0  # watches from an older resourceVersion get 410 Gone
        self._history: list[_Change] = []
        self._bookmarks = 0
        self._drops = 0
        self._held = False
        self._dropped_at = 0  # the resourceVersion at the last drop_watches
        self._waiting = 0  # watch requests held by hold_watches
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        self.api_client: Any = None

    # --- life ----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> FakeKube:
        fake = self

        class Handler(_Handler):
            kube = fake

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-kube", daemon=True).start()
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        self.api_client = client.ApiClient(configuration)
        return self

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing at this server (JSON, which is YAML), for settings or processes that read one."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "rok", "user": {"token": "rok-service-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "rok"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        return path

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self.api_client is not None:
            self.api_client.close()

    # --- objects -------------------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ``obj`` in the collection at ``path`` (e.g. ``/api/v1/namespaces/ns/pods``)."""
        api, ns, plural, _ = _parse(path)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise _Error(422, "Invalid", "metadata.name: Required value")
        if ns is not None:
            meta["namespace"] = ns
        key = (api, plural, ns, meta["name"])
        with self._lock:
            if key in self.objects:
                raise _Error(409, "AlreadyExists", f'{plural} "{meta["name"]}" already exists')
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            for transient in ("deletionTimestamp", "resourceVersion"):
                meta.pop(transient, None)
            obj.setdefault("kind", self.types.get(api, plural).kind)
            obj.setdefault("apiVersion", api.removeprefix("apis/").removeprefix("api/"))
            for react in self.reactions.get(plural, ()):
                react(obj)
            if (api, plural) == CRDS:
                self.types.register_crd(obj)
            return self._commit("ADDED", key, obj)

    def get(self, path: str) -> dict[str, Any]:
        key = _key(path)
        with self._lock:
            if key not in self.objects:
                raise _Error(404, "NotFound", f'{key[1]} "{key[3]}" not found')
            return copy.deepcopy(self.objects[key])

    def replace(
        self, path: str, obj: dict[str, Any], *, check_version: bool = False, part: str = "all"
    ) -> dict[str, Any]:
        """Replace an object. ``check_version`` (what a client's PUT gets) refuses a write whose
        ``metadata.resourceVersion`` is stale with 409 Conflict; a test changing state directly skips it.

        ``part`` is what the write may change, as the API server splits it for a type with a status
        subresource: ``"status"`` (a write to ``…/status``: the status only), ``"main"`` (a write to the object:
        everything but the status) or ``"all"`` (a test's direct write, or a type without the subresource).
        A change outside metadata and status raises ``metadata.generation``; an object being deleted whose
        last finalizer goes is removed."""
        key = _key(path)
        with self._lock:
            old = self.objects.get(key)
            if old is None:
                raise _Error(404, "NotFound", f'{key[1]} "{key[3]}" not found')
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            sent = meta.get("resourceVersion")
            if check_version and sent and sent != old["metadata"]["resourceVersion"]:
                # optimistic concurrency, as the API server does it: a write based on a stale read is refused
                raise _Error(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {key[1]} "{key[3]}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                )
            if part == "status":
                obj = {**copy.deepcopy(old), "status": obj.get("status")}
                if obj["status"] is None:
                    obj.pop("status")
                meta = obj["metadata"]
            elif part == "main":
                obj.pop("status", None)
                if "status" in old:
                    obj["status"] = copy.deepcopy(old["status"])
            for kept in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp", "generation"):
                if kept in old["metadata"]:
                    meta[kept] = old["metadata"][kept]
                elif kept in ("deletionTimestamp", "generation"):
                    meta.pop(kept, None)
            obj.setdefault("kind", old.get("kind"))
            obj.setdefault("apiVersion", old.get("apiVersion"))
            if _spec_of(obj) != _spec_of(old):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                self._remove(key, obj)
                return copy.deepcopy(obj)
            return self._commit("MODIFIED", key, obj)

    def patch(self, path: str, patch: dict[str, Any] | list[dict[str, Any]], *, part: str = "all") -> dict[str, Any]:
        """A JSON patch (a list of operations) or a JSON merge patch (a dict); ``part`` as for :meth:`replace`."""
        current = self.get(path)
        patched = _json_patch(current, patch) if isinstance(patch, list) else _merge(current, patch)
        return self.replace(path, patched, part=part)

    def apply(self, path: str, obj: dict[str, Any], *, part: str = "all") -> dict[str, Any]:
        """Server-side apply, approximated: create the object if it is missing, else merge it in (maps merged,
        lists replaced) — what an applier that owns every field it sends sees. Field ownership is not tracked:
        a field the applier stops sending stays."""
        name = _parse(path)[3]
        with self._lock:
            if _key(path) not in self.objects:
                collection = path.rsplit("/", 1)[0]
                return self.create(collection, {**obj, "metadata": {**obj.get("metadata", {}), "name": name}})
            return self.patch(path, obj, part=part)

    def delete(self, path: str, *, propagation: str = "Background") -> dict[str, Any]:
        """Delete an object. One with finalizers gets a ``deletionTimestamp`` and stays until the last finalizer
        is removed. Once it is gone, its dependents (``ownerReferences`` to its uid) are garbage-collected
        (``Background``, the default, and ``Foreground`` alike) or freed of that reference (``Orphan``)."""
        key = _key(path)
        with self._lock:
            obj = self.objects.get(key)
            if obj is None:
                raise _Error(404, "NotFound", f'{key[1]} "{key[3]}" not found')
            obj = copy.deepcopy(obj)
            meta = obj["metadata"]
            if meta.get("finalizers"):
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = _now()
                    meta["deletionGracePeriodSeconds"] = 0
                    return self._commit("MODIFIED", key, obj)
                return copy.deepcopy(obj)
            return self._remove(key, obj, propagation=propagation)

    def _remove(self, key: Key, obj: dict[str, Any], *, propagation: str = "Background") -> dict[str, Any]:
        """Take an object out (a DELETED event), then collect or orphan its dependents."""
        self.objects.pop(key, None)
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._history.append(_Change(self._rv, "DELETED", key, copy.deepcopy(obj)))
        self._lock.notify_all()
        if key[:2] == CRDS:
            self.types.unregister_crd(obj)
        self._collect(obj["metadata"]["uid"], orphan=propagation == "Orphan")
        return obj

    def _collect(self, owner_uid: str, *, orphan: bool) -> None:
        """The garbage collector's part: dependents of a removed owner go when no owner of theirs remains."""
        alive = {o["metadata"]["uid"] for o in self.objects.values()}
        for key, dependent in list(self.objects.items()):
            refs = dependent["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == owner_uid for r in refs):
                continue
            if orphan or any(r.get("uid") in alive for r in refs if r.get("uid") != owner_uid):
                remaining = [r for r in refs if r.get("uid") != owner_uid]
                patched = copy.deepcopy(dependent)
                patched["metadata"]["ownerReferences"] = remaining
                if not remaining:
                    patched["metadata"].pop("ownerReferences")
                self._commit("MODIFIED", key, patched)
            elif key in self.objects:
                self.delete("/" + "/".join(_path_parts(key)))

    def list_objects(self, path: str, label_selector: str = "", field_selector: str = "") -> list[dict[str, Any]]:
        api, ns, plural, _ = _parse(path)
        with self._lock:
            return [
                copy.deepcopy(o)
                for k, o in sorted(self.objects.items(), key=lambda kv: int(kv[1]["metadata"]["resourceVersion"]))
                if _in(k, api, plural, ns) and _selected(o, label_selector, field_selector)
            ]

    def review(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The answer to a TokenReview or SubjectAccessReview posted at ``path``; None for any other path."""
        api, _, plural, _ = _parse(path)
        if (api, plural) == rbac.TOKEN_REVIEWS:
            return self.tokens.review(body)
        if (api, plural) == rbac.ACCESS_REVIEWS:
            with self._lock:
                return rbac.access_review(dict(self.objects), body)
        return None

    def react(self, plural: str, reaction: Callable[[dict[str, Any]], None]) -> None:
        """Let a test play a controller: ``reaction(obj)`` may change every new object of ``plural``."""
        self.reactions.setdefault(plural, []).append(reaction)

    def _commit(self, kind: str, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.objects[key] = obj
        self._history.append(_Change(self._rv, kind, key, copy.deepcopy(obj)))
        self._lock.notify_all()
        return copy.deepcopy(obj)

    # --- faults --------------------------------------------------------------------------------------------

    def compact(self) -> None:
        """Forget the history so far: a watch from any older resourceVersion gets 410 Gone."""
        with self._lock:
            self._oldest = self._rv
            self._history.clear()

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current resourceVersion to every watch that allows bookmarks."""
        with self._lock:
            self._bookmarks += 1
            self._lock.notify_all()

    def drop_watches(self) -> None:
        """Break every open watch connection mid-stream: what changed before this call still reaches it, nothing
        after (however late its server thread wakes up)."""
        with self._lock:
            self._drops += 1
            self._dropped_at = self._rv
            self._lock.notify_all()

    @contextmanager
    def hold_watches(self) -> Iterator[None]:
        """New watch requests wait (unanswered) until the block ends."""
        with self._lock:
            self._held = True
        try:
            yield
        finally:
            with self._lock:
                self._held = False
                self._lock.notify_all()

    def wait_for_held(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` watch requests are held by :meth:`hold_watches` (e.g. every dropped watch is back)."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._waiting >= count, timeout):
                raise TimeoutError(f"{self._waiting} watch requests held, not {count}, after {timeout}s")

    def watches(self, path_prefix: str = "") -> list[_Request]:
        return [r for r in self.requests if r.params.get("watch") in ("true", "1") and r.path.startswith(path_prefix)]

    def wait_for_watches(self, count: int, path_prefix: str = "", timeout: float = 10.0) -> None:
        """Block until ``count`` watches under ``path_prefix`` stream (a sync point, not a delay).

        A watch is recorded in :attr:`requests` once it streams, so faults injected after this returns
        (:meth:`bookmark`, :meth:`drop_watches`) reach it.
        """
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.watches(path_prefix)) >= count, timeout):
                raise AssertionError(f"expected {count} watches of {path_prefix!r}, saw {self.watches(path_prefix)}")


class _Error(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


def _parse(path: str) -> tuple[str, str | None, str, str | None]:
    match = _PATH.match(path.rstrip("/"))
    if not match:
        raise _Error(404, "NotFound", f"the server could not find the requested resource ({path})")
    return match["api"], match["ns"], match["plural"], match["name"]


def _key(path: str) -> Key:
    api, ns, plural, name = _parse(path)
    if name is None:
        raise _Error(405, "MethodNotAllowed", f"{path} is a collection")
    return api, plural, ns, name


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    """What ``metadata.generation`` counts changes of: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


def _path_parts(key: Key) -> list[str]:
    api, plural, ns, name = key
    return [api, *(["namespaces", ns] if ns is not None else []), plural, name]


def _kind(plural: str) -> str:
    """The kind of an untyped collection (its plural without the final s, capitalised)."""
    return ResourceTypes().get("", plural).kind


def _in(key: Key, api: str, plural: str, ns: str | None) -> bool:
    return key[0] == api and key[1] == plural and (ns is None or key[2] == ns)


def _selected(obj: dict[str, Any], label_selector: str, field_selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in label_selector.split(","))):
        if term.startswith("!"):
            ok = term[1:] not in labels
        elif "!=" in term:
            k, v = term.split("!=", 1)
            ok = labels.get(k) != v
        elif "=" in term:
            k, v = term.split("==", 1) if "==" in term else term.split("=", 1)
            ok = labels.get(k) == v
        else:
            ok = term in labels
        if not ok:
            return False
    for term in filter(None, (t.strip() for t in field_selector.split(","))):
        k, _, v = term.partition("=")
        if k == "metadata.name" and obj["metadata"].get("name") != v:
            return False
        if k == "metadata.namespace" and obj["metadata"].get("namespace") != v:
            return False
    return True


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = _merge(result.get(k), v)
    return result


def _json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif op["op"] == "test":  # the whole patch applies only if the value is as the client last saw it
            found = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if found != op["value"]:
                raise _Error(422, "Invalid", f"the test of {op['path']} failed: {found!r} is not {op['value']!r}")
        else:
            raise _Error(422, "Invalid", f"unsupported JSON patch op {op['op']!r}")
    return doc


class _Handler(BaseHTTPRequestHandler):
    kube: FakeKube
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls

    def _params(self) -> tuple[str, dict[str, str]]:
        url = urlsplit(self.path)
        return url.path, {k: v[-1] for k, v in parse_qs(url.query).items()}

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def _send(self, code: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        path, params = self._params()
        kube = self.kube
        try:
            if method == "GET" and params.get("watch") in ("true", "1"):
                return self._watch(path, params)  # recorded once it streams
            with kube._lock:
                kube.requests.append(_Request(method, path, params))
                kube._lock.notify_all()
            if method == "GET" and path.rstrip("/") == "/version":
                return self._send(200, VERSION)
            if method == "GET":
                with kube._lock:
                    document = kube.types.document(path)
                if document is not None:
                    return self._send(200, document)
                api, _, plural, name = _parse(path)
                if name is not None:
                    return self._send(200, kube.get(path.removesuffix("/status")))
                items = kube.list_objects(path, params.get("labelSelector", ""), params.get("fieldSelector", ""))
                with kube._lock:
                    kind = kube.types.get(api, plural).kind
                return self._send(
                    200,
                    {
                        "kind": f"{kind}List",
                        "apiVersion": api.removeprefix("apis/").removeprefix("api/"),
                        "metadata": {"resourceVersion": str(kube.resource_version)},
                        "items": items,
                    },
                )
            if method == "POST":
                body = self._body()
                review = kube.review(path, body)
                return self._send(201, review if review is not None else kube.create(path, body))
            part = self._part(path)
            target = path.removesuffix("/status")
            if method == "PUT":
                return self._send(200, kube.replace(target, self._body(), check_version=True, part=part))
            if method == "PATCH":
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if content_type == "application/apply-patch+yaml":
                    if not params.get("fieldManager"):
                        raise _Error(422, "Invalid", "fieldManager: Required value: is required for apply patch")
                    return self._send(200, kube.apply(target, self._body(), part=part))
                return self._send(200, kube.patch(target, self._body(), part=part))
            if method == "DELETE":
                options = self._body() or {}
                propagation = params.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
                return self._send(200, kube.delete(path, propagation=propagation))
            raise _Error(405, "MethodNotAllowed", method)
        except _Error as error:
            self._send(error.code, error.status())

    def _part(self, path: str) -> str:
        """What a client's write may change: a type with a status subresource splits status from the rest."""
        api, _, plural, _ = _parse(path)
        with self.kube._lock:
            typed = self.kube.types.get(api, plural)
        if path.rstrip("/").endswith("/status"):
            return "status" if typed.status else "all"
        return "main" if typed.status else "all"

    do_GET = lambda self: self._handle("GET")  # noqa: E731
    do_POST = lambda self: self._handle("POST")  # noqa: E731
    do_PUT = lambda self: self._handle("PUT")  # noqa: E731
    do_PATCH = lambda self: self._handle("PATCH")  # noqa: E731
    do_DELETE = lambda self: self._handle("DELETE")  # noqa: E731

    def _chunk(self, event: dict[str, Any]) -> None:
        line = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.wfile.flush()

    def _watch(self, path: str, params: dict[str, str]) -> None:
        kube = self.kube
        api, ns, plural, _ = _parse(path)
        labels, fields = params.get("labelSelector", ""), params.get("fieldSelector", "")
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(params.get("timeoutSeconds") or 3600)
        since = params.get("resourceVersion") or ""
        with kube._lock:
            if kube._held:
                kube._waiting += 1
                kube._lock.notify_all()
                kube._lock.wait_for(lambda: not kube._held or kube._stopping)
                kube._waiting -= 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = threading.Event()

        def expire() -> None:
            with kube._lock:
                deadline.set()
                kube._lock.notify_all()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            with kube._lock:
                drops, marks = kube._drops, kube._bookmarks
                kube.requests.append(_Request("GET", path, params))  # from here on, faults reach this watch
                kube._lock.notify_all()
                if since in ("", "0"):
                    pending = [
                        _Change(int(o["metadata"]["resourceVersion"]), "ADDED", k, copy.deepcopy(o))
                        for k, o in kube.objects.items()
                        if _in(k, api, plural, ns) and _selected(o, labels, fields)
                    ]
                    pending.sort(key=lambda c: c.rv)
                    cursor = kube._rv
                elif int(since) < kube._oldest:
                    gone = _Error(410, "Expired", f"too old resource version: {since} ({kube._oldest})")
                    self._chunk({"type": "ERROR", "object": gone.status()})
                    self.wfile.write(b"0\r\n\r\n")
                    return
                else:
                    pending, cursor = [], int(since)
            while True:
                for change in pending:
                    self._chunk({"type": change.type, "object": change.obj})
                with kube._lock:

                    def due(marks: int = marks, cursor: int = cursor) -> bool:
                        return bool(
                            kube._stopping
                            or deadline.is_set()
                            or kube._drops != drops
                            or kube._bookmarks != marks
                            or (kube._history and kube._history[-1].rv > cursor)
                        )

                    kube._lock.wait_for(due)
                    if kube._stopping or deadline.is_set():
                        break
                    pending = [
                        c
                        for c in kube._history
                        if c.rv > cursor and _in(c.key, api, plural, ns) and _selected(c.obj, labels, fields)
                    ]
                    cursor = kube._rv
                    if kube._bookmarks != marks:
                        marks = kube._bookmarks
                        if bookmarks:
                            pending.append(
                                _Change(
                                    cursor,
                                    "BOOKMARK",
                                    (api, plural, ns, ""),
                                    {
                                        "kind": kube.types.get(api, plural).kind,
                                        "apiVersion": api.removeprefix("apis/").removeprefix("api/"),
                                        "metadata": {"resourceVersion": str(cursor)},
                                    },
                                )
                            )
                    dropped = kube._drops != drops
                    if dropped:  # the line died when it was dropped: what changed later never went out on it
                        pending = [c for c in pending if c.rv <= kube._dropped_at]
                if dropped:  # what was due goes out first, then the line dies mid-chunk
                    for change in pending:
                        self._chunk({"type": change.type, "object": change.obj})
                    self.wfile.write(b'400\r\n{"type":"MODIF')
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            timer.cancel()


@pytest.fixture
def fake_kube() -> Iterator[FakeKube]:
    """A started fake Kubernetes API server; ``fake_kube.api_client`` talks to it."""
    kube = FakeKube().start()
    try:
        yield kube
    finally:
        kube.stop()
