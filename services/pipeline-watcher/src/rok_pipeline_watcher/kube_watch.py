"""List and watch one kind of Kubernetes object in a worker thread, feeding an asyncio queue.

The official ``kubernetes`` client is synchronous, so each watch runs in a thread of its own and hands
what it sees to the event loop. The protocol, as the API server defines it:

* list, remember the list's ``resourceVersion``, then watch from it (with bookmarks, so that a quiet
  watch still learns how far it is);
* a watch request ends (its ``timeoutSeconds``, or the connection drops): watch again from the last
  ``resourceVersion`` seen, nothing is missed;
* ``410 Gone`` (that version is too old, the server compacted its history): list again, and tell the
  consumer so that it can replace what it knew (:data:`LISTED`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch

log = logging.getLogger(__name__)

LISTED = "LISTED"  # a (re)list: ``objects`` is everything that exists now
BOOKMARK = "BOOKMARK"  # no object changed; the watch has seen everything up to ``resource_version``


@dataclass(frozen=True)
class Change:
    kind: str  # what is watched, e.g. "workflows" or "pods"
    type: str  # ADDED, MODIFIED, DELETED, LISTED or BOOKMARK
    objects: tuple[dict[str, Any], ...]
    resource_version: str | None = None  # how far the watch has seen once this change is applied


class ResourceWatch:
    """One list+watch loop. ``list_fn`` is a ``kubernetes`` client list method (namespaced or not)."""

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        *args: Any,
        label_selector: str = "",
        timeout_seconds: int = 300,
        retry_delay: float = 1.0,
        **kwargs: Any,
    ) -> None:
        self.kind = kind
        self._list_fn, self._args, self._kwargs = list_fn, args, kwargs
        self._label_selector = label_selector
        self._timeout_seconds = timeout_seconds
        self._retry_delay = retry_delay
        self._stopped = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self.resource_version: str | None = None

    def start(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Change]) -> None:
        def emit(change: Change) -> None:
            if self._stopped.is_set():
                return
            try:
                loop.call_soon_threadsafe(queue.put_nowait, change)
            except RuntimeError:  # the loop is closed: nobody listens any more
                self._stopped.set()

        self._thread = threading.Thread(target=self._run, args=(emit,), name=f"watch-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, without blocking: the thread ends as soon as its current request returns."""
        self._stopped.set()
        if self._watch is not None:
            self._watch.stop()

    def join(self, timeout: float = 1.0) -> None:
        """Wait (a little) for the stopped thread to end; it is a daemon, so one stuck in a request never
        keeps the process alive."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, emit: Callable[[Change], None]) -> None:
        while not self._stopped.is_set():
            try:
                if self.resource_version is None:
                    self._list(emit)
                self._watch_once(emit)
            except client.ApiException as error:
                if error.status == 410:
                    log.info("%s: resourceVersion %s is gone, listing again", self.kind, self.resource_version)
                    self.resource_version = None
                    continue
                log.warning("%s: the API server answered %s %s; retrying", self.kind, error.status, error.reason)
                self._stopped.wait(self._retry_delay)
            except Exception as error:  # a dropped connection, a refused one: resume from where we were
                if self._stopped.is_set():
                    break
                log.info("%s: watch interrupted (%s); resuming from %s", self.kind, error, self.resource_version)
                self._stopped.wait(self._retry_delay)

    def _list(self, emit: Callable[[Change], None]) -> None:
        response = self._list_fn(
            *self._args, label_selector=self._label_selector, _preload_content=False, **self._kwargs
        )
        try:
            data = json.loads(response.data)
        finally:
            response.release_conn()
        self.resource_version = data["metadata"]["resourceVersion"]
        emit(Change(self.kind, LISTED, tuple(data.get("items") or ()), self.resource_version))
        log.info("%s: listed %d at resourceVersion %s", self.kind, len(data.get("items") or ()), self.resource_version)

    def _watch_once(self, emit: Callable[[Change], None]) -> None:
        self._watch = watch.Watch(return_type="object")  # plain dicts, as the translator reads them
        if self._stopped.is_set():
            return
        stream = self._watch.stream(
            self._list_fn,
            *self._args,
            label_selector=self._label_selector,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._timeout_seconds,
            **self._kwargs,
        )
        for event in stream:
            if self._stopped.is_set():
                break
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                status = obj if isinstance(obj, dict) else {}
                raise client.ApiException(status=status.get("code", 500), reason=status.get("message", "watch error"))
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                self.resource_version = version
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                emit(Change(self.kind, kind, (obj,), self.resource_version))
            elif kind == BOOKMARK:
                emit(Change(self.kind, BOOKMARK, (), self.resource_version))
