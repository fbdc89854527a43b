"""The registry's HTTP API as commands reach it in a cluster, where people (and notebook pods) have no way onto
the bus: ``ROK_REGISTRY_URL`` names the registry (behind Kubeflow's gateway, or its Service from inside the
cluster), and the caller's identity is a bearer token — ``ROK_TOKEN``, else the service account token of the pod
the command runs in (a notebook server's ``default-editor``), which the registry checks with a TokenReview.

The CLI's restores and clones (``rokcli``) and ``rok submit`` (the pipeline watcher's command) share it. Only the
standard library: a restore is one POST and a poll.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rokcommon.errors import Forbidden, InvalidRequest, NotFound, PermanentError, TemporaryError

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
POLL = 1.0  # seconds between two looks at a restore


class Asked(Protocol):
    def body(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Remote:
    """The registry at ``url``, asked with ``token``."""

    url: str
    token: str | None
    poll: float = POLL

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Remote | None:
        env = os.environ if environ is None else environ
        url = env.get("ROK_REGISTRY_URL", "").strip()
        if not url:
            return None
        token = env.get("ROK_TOKEN", "").strip() or None
        token_file = Path(env.get("ROK_TOKEN_FILE", "") or SERVICE_ACCOUNT_TOKEN)
        if token is None and token_file.is_file():
            token = token_file.read_text().strip() or None
        return cls(url.rstrip("/"), token)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call; its error answers become the CLI's errors (and exit codes)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                found: dict[str, Any] = json.loads(answer.read() or b"{}")
                return found
        except urllib.error.HTTPError as error:
            raise _error(error.code, _message(error.read()), self.url) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise TemporaryError(f"the registry at {self.url} did not answer: {reason}") from None

    def experiment_bucket(self, namespace: str, experiment: str) -> dict[str, Any]:
        """The experiment's bucket (its ``name`` and ``suffix``), named now if it has none yet."""
        query = urllib.parse.urlencode({"experiment": experiment})
        return self.call("PUT", f"/api/v1/namespaces/{urllib.parse.quote(namespace, safe='')}/buckets?{query}")

    def restore(
        self, asked: Asked, timeout: float, on_update: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Ask for a restore and follow it until it ends (or ``timeout`` seconds pass)."""
        state = self.call("POST", "/api/v1/restores", asked.body())
        request_id = state["request_id"]
        deadline = time.monotonic() + timeout
        seen = state["state"]
        if on_update is not None:
            on_update(state)
        while state["state"] not in ("completed", "failed"):
            if time.monotonic() > deadline:
                raise TemporaryError(
                    f"restore {request_id} did not finish within {timeout:g}s; "
                    f"follow it with GET {self.url}/api/v1/restores/{request_id}"
                )
            time.sleep(self.poll)
            state = self.call("GET", f"/api/v1/restores/{request_id}")
            if state["state"] != seen and on_update is not None:
                on_update(state)
            seen = state["state"]
        return state


def _message(raw: bytes) -> str:
    try:
        answer = json.loads(raw)
    except ValueError:  # not the registry's JSON (a proxy's page, another server): its text on one line
        return " ".join(raw.decode(errors="replace").split())[:300]
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        return str(error.get("message"))
    return str(error or answer.get("detail") or answer)


def _error(status: int, message: str, url: str) -> Exception:
    if status == 401:
        return Forbidden(f"the registry does not know who you are ({message}); set ROK_TOKEN")
    if status == 403:
        return Forbidden(message)
    if status == 404:
        return NotFound(message)
    if status in (400, 413, 414, 422):
        return InvalidRequest(message)
    if status >= 500:
        return TemporaryError(f"the registry at {url} answered {status}: {message}")
    return PermanentError(f"the registry at {url} answered {status}: {message}")
