"""The whole system for one test: real nats-server, S3 through ``rclone serve s3``, PostgreSQL, and the
snapshotter, registry and restorer each in its own process; plus what a test does to it: play a pipeline run,
read the lineage, ask for a restore, read the spans every process wrote.

A run is played the way the local runner plays one: publish an event, wait for the registry to announce the
version (``VersionCommitted``), change the volumes, go on; what each volume held at each version is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from rokcommon import bus, streams, subjects
from rokcommon.errors import InvalidEvent
from rokcommon.events import (
    DirectoryTarget,
    Event,
    RestoreCompleted,
    RestoreFailed,
    RestoreRequested,
    RunFinished,
    RunRef,
    RunStarted,
    SnapshotCompleted,
    StepFinished,
    StepRef,
    StepStarted,
    VersionCommitted,
    VolumeRef,
    version_key,
)
from rokcommon.registry_client import RegistryClient
from rokcommon.registry_contract import Lineage, Version
from rokcommon.urls import parse_url
from rokcommon.versions import Phase, VersionKey
from roktesting.nats import NatsServer

from .processes import ServiceProcess

NODE = "e2e-node.cluster.local"  # dots, as Kubernetes node names have
NAMESPACE = "team-a"
SERVICES = ("registry", "snapshotter", "restorer")


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: relative path → what it is (file digest and mode, link target, directory)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = f"link:{os.readlink(path)}"
        elif path.is_dir():
            found[rel] = f"dir:{path.stat().st_mode & 0o7777:o}"
        else:
            digest = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
            found[rel] = f"file:{path.stat().st_mode & 0o7777:o}:{digest}"
    return found


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.2) -> bool:
    """Ask ``check`` until it says yes or ``timeout`` seconds passed; its last answer."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(every)
    return True


@dataclass
class System:
    root: Path
    nats: NatsServer
    env: dict[str, str]
    spans_file: Path
    repo_dir: Path  # where the S3 server keeps the repository's objects
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    nc: Client | None = None
    commits: dict[VersionKey, VersionCommitted] = field(default_factory=dict)
    restores: dict[str, RestoreCompleted | RestoreFailed] = field(default_factory=dict)
    # every SnapshotCompleted stored in the stream, by stream sequence (a copy stored twice would be a bug)
    stored_snapshots: dict[int, SnapshotCompleted] = field(default_factory=dict)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _closing: bool = False

    def __post_init__(self) -> None:
        for name in SERVICES:
            env = {**self.env, "ROK_STATE_DIR": str(self.root / f"state-{name}")}
            self.services[name] = ServiceProcess(name, env, self.root)

    @property
    def snapshotter(self) -> ServiceProcess:
        return self.services["snapshotter"]

    @property
    def registry(self) -> ServiceProcess:
        return self.services["registry"]

    @property
    def restorer(self) -> ServiceProcess:
        return self.services["restorer"]

    @property
    def js(self) -> JetStreamContext:
        assert self.nc is not None
        return self.nc.jetstream()

    async def start(self, *names: str) -> None:
        """Start the services (all by default) at once, and follow the bus."""
        await asyncio.gather(*(self.services[n].start() for n in names or SERVICES))
        if self.nc is None:
            self.nc = await nats.connect(self.nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
            await streams.ensure_streams(self.js)
            self._tasks = [
                asyncio.create_task(self._follow(streams.VERSIONS.name, subjects.VERSION_COMMITTED)),
                asyncio.create_task(self._follow(streams.RESTORES.name, "rok.restore.*.v1")),
                asyncio.create_task(self._follow(streams.SNAPSHOTS.name, subjects.SNAPSHOT_COMPLETED)),
            ]

    async def close(self) -> None:
        """Stop following the bus and kill the services; bounded, whatever state the test left things in."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), 5)
        for service in self.services.values():
            service.close()

    # --- following the bus: a durable consumer each, so a nats-server restart loses nothing ---------------

    async def _follow(self, stream: str, filter_subject: str) -> None:
        durable = f"e2e-{uuid.uuid4().hex[:8]}"
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
        )
        sub = await self.js.pull_subscribe(filter_subject, durable=durable, stream=stream, config=config)
        while not self._closing:
            try:
                messages = await sub.fetch(32, timeout=0.5)
            except TimeoutError:
                continue
            except Exception:  # the server is restarting: the durable consumer resumes where it was
                await asyncio.sleep(0.1)
                continue
            for msg in messages:
                with contextlib.suppress(InvalidEvent):  # a test's poison message is no event to record
                    self._record(msg.subject, msg.data, msg.metadata.sequence.stream)
                with contextlib.suppress(Exception):
                    await msg.ack()

    def _record(self, subject: str, data: bytes, sequence: int) -> None:
        if subject == subjects.VERSION_COMMITTED:
            commit = VersionCommitted.decode(data)
            self.commits.setdefault(commit.key, commit)
        elif subject == subjects.SNAPSHOT_COMPLETED:
            self.stored_snapshots[sequence] = SnapshotCompleted.decode(data)
        elif subject == subjects.RESTORE_COMPLETED:
            done = RestoreCompleted.decode(data)
            self.restores.setdefault(done.request_id, done)
        elif subject == subjects.RESTORE_FAILED:
            failed = RestoreFailed.decode(data)
            self.restores.setdefault(failed.request_id, failed)
        self._arrived.set()

    async def until(self, found: Callable[[], Any], timeout: float, what: str) -> Any:
        """Wait until ``found()`` returns something (re-checked whenever an event arrives)."""

        async def poll() -> Any:
            while True:
                value = found()
                if value:
                    return value
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), 0.5)

        try:
            return await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            logs = "\n".join(f"--- {s.name}\n{s.tail(15)}" for s in self.services.values())
            raise AssertionError(f"no {what} within {timeout:.0f}s\n{logs}") from None

    async def committed(self, run: RunRef, step: StepRef | None, phase: Phase, timeout: float = 30) -> VersionCommitted:
        key = version_key(run, step, phase)
        return await self.until(lambda: self.commits.get(key), timeout, f"version {key}")  # type: ignore[no-any-return]

    def snapshots_of(self, run: RunRef, step: StepRef | None, phase: Phase) -> list[SnapshotCompleted]:
        key = version_key(run, step, phase)
        return [s for s in self.stored_snapshots.values() if s.key == key]

    # --- asking --------------------------------------------------------------------------------------------

    async def publish(self, event: Event, attempts: int = 40) -> None:
        """Publish, retrying while the server is away (the same event id is stored once)."""
        for attempt in range(attempts):
            try:
                await bus.publish(self.js, event, timeout=2.0)
                return
            except Exception:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.25)

    async def lineage(self, commit: VersionCommitted) -> Lineage:
        url = parse_url(commit.url)
        assert self.nc is not None and url.file is not None
        return await RegistryClient(self.nc, url.namespace, timeout=10).lineage(url.bucket, url.file)

    async def versions(self, commit: VersionCommitted) -> list[Version]:
        url = parse_url(commit.url)
        assert self.nc is not None and url.file is not None
        return await RegistryClient(self.nc, url.namespace, timeout=10).list_versions(url.bucket, url.file)

    async def restore(self, url: str, target: Path, timeout: float = 60) -> RestoreCompleted | RestoreFailed:
        request_id = uuid.uuid4().hex
        await self.publish(
            RestoreRequested.make(
                request_id=request_id, namespace=NAMESPACE, url=url, target=DirectoryTarget(path=str(target))
            )
        )
        return await self.until(lambda: self.restores.get(request_id), timeout, f"outcome of restore {url}")  # type: ignore[no-any-return]

    def spans(self) -> list[dict[str, Any]]:
        if not self.spans_file.exists():
            return []
        return [json.loads(line) for line in self.spans_file.read_text().splitlines() if line.strip()]


@dataclass
class PipelineRun:
    """A run over some volumes, played step by step; ``held`` keeps what the volumes held at each version."""

    system: System
    volumes: dict[str, Path]
    experiment: str = "e2e-experiment"
    run: RunRef = field(
        default_factory=lambda: RunRef(
            namespace=NAMESPACE, run_id=f"run-{uuid.uuid4().hex[:8]}", workflow_uid=str(uuid.uuid4())
        )
    )
    steps: list[StepRef] = field(default_factory=list)
    held: dict[tuple[str, str], dict[str, dict[str, str]]] = field(default_factory=dict)
    commits: dict[tuple[str, str], VersionCommitted] = field(default_factory=dict)

    @property
    def refs(self) -> tuple[VolumeRef, ...]:
        return tuple(
            VolumeRef(name=name, role="workspace" if i == 0 else "data", path=str(path))
            for i, (name, path) in enumerate(self.volumes.items())
        )

    def started(self) -> RunStarted:
        return RunStarted.make(
            run=self.run,
            run_name=f"e2e {self.run.run_id}",
            pipeline_name="e2e-pipeline",
            experiment=self.experiment,
            node=NODE,
            volumes=self.refs,
            started_at=datetime.now(UTC),
        )

    def step(self, name: str) -> StepRef:
        ref = StepRef(run=self.run, step_id=f"{self.run.workflow_uid}-{len(self.steps)}", name=name)
        self.steps.append(ref)
        return ref

    def step_started(self, step: StepRef) -> StepStarted:
        return StepStarted.make(step=step, node=NODE, volumes=self.refs, guarded=True, started_at=datetime.now(UTC))

    def step_finished(self, step: StepRef, outcome: str = "succeeded") -> StepFinished:
        return StepFinished.make(
            step=step, node=NODE, volumes=self.refs, guarded=True, outcome=outcome, finished_at=datetime.now(UTC)
        )

    def finished(self, outcome: str = "succeeded") -> RunFinished:
        return RunFinished.make(run=self.run, outcome=outcome, finished_at=datetime.now(UTC))

    async def wait(self, step: StepRef | None, phase: Phase, timeout: float = 30) -> VersionCommitted:
        commit = await self.system.committed(self.run, step, phase, timeout)
        key = (step.name if step else "initial", phase)
        self.commits[key] = commit
        return commit

    def remember(self, step_name: str, phase: str) -> None:
        self.held[(step_name, phase)] = {name: tree(path) for name, path in self.volumes.items()}

    async def begin(self) -> VersionCommitted:
        self.remember("initial", "initial")
        await self.system.publish(self.started())
        return await self.wait(None, "initial")

    async def play_step(self, name: str, effect: Callable[[], None], outcome: str = "succeeded") -> StepRef:
        """Before-snapshot, the step's effect on the volumes, after-snapshot — each version awaited."""
        step = self.step(name)
        self.remember(name, "before")
        await self.system.publish(self.step_started(step))
        await self.wait(step, "before")
        effect()
        self.remember(name, "after")
        await self.system.publish(self.step_finished(step, outcome))
        await self.wait(step, "after")
        return step

    async def end(self, outcome: str = "succeeded") -> None:
        await self.system.publish(self.finished(outcome))
