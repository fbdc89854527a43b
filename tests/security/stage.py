"""The stage the attacker tests play on: a multi-user cluster with two profiles, and rok serving both.

Real parts wherever they can run: a nats-server started with rok's users and permissions (the cluster's table,
:func:`rokcommon.permissions.table`), the registry and the restorer as their composition roots build them (real
HTTP over uvicorn, real consumers), and the fake Kubernetes API answering TokenReview and SubjectAccessReview from
Kubeflow's RBAC objects, reached by the real ``kubernetes`` client through a kubeconfig. Both services run in
cluster mode (``ROK_AUTH=cluster``).

The people: ``alice`` owns profile ``team-a``, ``bob`` owns ``team-b``, ``carol`` may only view ``team-a``. Each
namespace holds one recorded run (an initial version, a step's before- and after-version).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any, TypeVar

import rokcli
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from rok_registry.main import Registry
from rokcommon import streams, subjects
from rokcommon.events import (
    Event,
    RestoreCompleted,
    RestoreFailed,
    RunFinished,
    RunRef,
    RunStarted,
    SnapshotCompleted,
    SnapshotStatsModel,
    StepFinished,
    StepRef,
    StepStarted,
    VolumeRef,
)
from rokcommon.registry_contract import Version
from roktesting.kubernetes import FakeKube
from roktesting.nats import UsersNats

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
TEAM_A, TEAM_B = "team-a", "team-b"
HOST = "rok.example.com"  # the name the registry is configured to answer to, besides loopback
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

R = TypeVar("R")


@dataclass
class Answer:
    status: int
    body: str
    headers: Message

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer to look at, not to follow


_opener = urllib.request.build_opener(_NoRedirects)


def _call(url: str, method: str, headers: dict[str, str], body: bytes | None) -> Answer:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with _opener.open(request, timeout=30) as response:
            return Answer(response.status, response.read().decode(), response.headers)
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read().decode(), error.headers)


async def http(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None
) -> Answer:
    return await asyncio.to_thread(_call, url, method, headers or {}, body)


def as_user(user: str) -> dict[str, str]:
    """The header Kubeflow's gateway sets for a signed-in person."""
    return {"kubeflow-userid": user}


@dataclass
class Stage:
    kube: FakeKube
    nats: UsersNats
    registry: Registry
    admin: Client  # a test-only NATS user that may do anything: to set up and to watch
    versions: dict[str, list[Version]] = field(default_factory=dict)  # namespace → its run's versions

    @property
    def web(self) -> str:
        return self.registry.http.url

    def api(self, namespace: str) -> str:
        return f"{self.web}/api/v1/namespaces/{namespace}"

    def version(self, namespace: str, index: int = -1) -> Version:
        return self.versions[namespace][index]

    @property
    def js(self) -> JetStreamContext:
        return self.admin.jetstream()


def recorded_run(namespace: str, uid: str, *, experiment: str, run_name: str, step: str) -> list[Event]:
    """The events of a one-step run in ``namespace``: an initial version, the step's before and after."""
    run = RunRef(namespace=namespace, run_id=f"run-{uid}", workflow_uid=uid)
    volumes = (VolumeRef(name="workspace", role="workspace", path=f"/vol/{uid}/workspace"),)
    ref = StepRef(run=run, step_id=f"{uid}-step", name=step)
    clock = [T0]

    def tick() -> datetime:
        clock[0] += timedelta(seconds=10)
        return clock[0]

    def snapshot(step_ref: StepRef | None, phase: str, at: datetime) -> SnapshotCompleted:
        return SnapshotCompleted.make(
            run=run,
            step=step_ref,
            phase=phase,  # type: ignore[arg-type]
            volume=volumes[0],
            volumes=("workspace",),
            node="node-a",
            repository="file:///repo",
            snapshot_id=f"snap-{uid}-{phase}",
            stats=SnapshotStatsModel(files=1, bytes_scanned=100, bytes_new=10),
            taken_at=at,
        )

    started, finished = tick(), tick()
    return [
        RunStarted.make(
            run=run,
            run_name=run_name,
            pipeline_name=run_name,
            experiment=experiment,
            node="node-a",
            volumes=volumes,
            started_at=T0,
        ),
        snapshot(None, "initial", T0),
        StepStarted.make(step=ref, node="node-a", volumes=volumes, started_at=started),
        snapshot(ref, "before", started),
        StepFinished.make(step=ref, node="node-a", volumes=volumes, outcome="succeeded", finished_at=finished),
        snapshot(ref, "after", finished),
        RunFinished.make(run=run, outcome="succeeded", finished_at=tick()),
    ]


async def eventually(probe: Callable[[], Awaitable[R]], *, timeout: float = 20.0) -> R:
    """Ask ``probe`` until it returns something true, then return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{probe} stayed false for {timeout}s")
        await asyncio.sleep(0.05)


class Outcomes:
    """Every restore outcome published on the bus, by request id (watched as the admin user)."""

    def __init__(self) -> None:
        self.seen: dict[str, RestoreCompleted | RestoreFailed] = {}

    async def start(self, nc: Client) -> None:
        async def on_failed(msg: Msg) -> None:
            event = RestoreFailed.model_validate_json(msg.data)
            self.seen[event.request_id] = event

        async def on_completed(msg: Msg) -> None:
            event = RestoreCompleted.model_validate_json(msg.data)
            self.seen[event.request_id] = event

        await nc.subscribe(subjects.RESTORE_FAILED, cb=on_failed)
        await nc.subscribe(subjects.RESTORE_COMPLETED, cb=on_completed)
        await nc.flush()

    async def of(self, request_id: str) -> RestoreCompleted | RestoreFailed:
        return await eventually(lambda: _now(self.seen.get(request_id)))


async def _now(value: R) -> R:
    return value


async def dead_letters(js: JetStreamContext) -> dict[str, list[Msg]]:
    """Every dead letter so far, by the request id in its payload (the message as it came)."""
    stored = (await js.stream_info(streams.DLQ.name)).state.messages
    sub = await js.subscribe(f"{subjects.DEAD_LETTER}.>", stream=streams.DLQ.name, ordered_consumer=True)
    found: dict[str, list[Msg]] = {}
    try:
        for _ in range(stored):
            msg = await sub.next_msg(timeout=5.0)
            found.setdefault(json.loads(msg.data).get("request_id", ""), []).append(msg)
    finally:
        await sub.unsubscribe()
    return found


def rok(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``rok ARGS`` in this process with exactly the ``ROK_*`` settings in ``env``: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv, saved = sys.argv, {k: v for k, v in os.environ.items() if k.startswith("ROK_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    sys.argv = ["rok", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rokcli.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)
    return code, out.getvalue(), err.getvalue()
