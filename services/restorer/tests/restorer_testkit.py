"""What the restorer's tests share: volumes, tree comparison, a registry stand-in, outcome collection."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from rok_restorer.handlers import DURABLE
from rokcommon import bus, streams
from rokcommon.events import (
    DirectoryTarget,
    NotebookTarget,
    PvcTarget,
    RestoreCompleted,
    RestoreFailed,
    RestoreProgress,
    RestoreRequested,
)
from rokcommon.registry_contract import ErrorBody, Member, Reply, Resolve, Resolved, Version
from rokcommon.urls import format_url, parse_url

NAMESPACE = "team-a"
VERSION_URL = format_url(NAMESPACE, "exp-3mis2", "train-3mis2-a1b2", "k3x9q2mf")


def tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``root``: relative path → (kind, mode, content digest or link target)."""
    found: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if path.is_symlink():
                found[rel] = ("link", 0, os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", st.st_mode & 0o7777, "")
            else:
                found[rel] = ("file", st.st_mode & 0o7777, hashlib.blake2b(path.read_bytes()).hexdigest())
    return found


def fill(root: Path, seed: int, big: int = 3 << 20) -> Path:
    """A volume: a large incompressible file, small files, a sub-directory, a symlink, an executable."""
    rnd = __import__("random").Random(seed)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "big.bin").write_bytes(rnd.randbytes(big))
    for i in range(20):
        (root / "sub" / f"small-{i}.txt").write_text(f"volume {seed} file {i}\n" * (i + 1))
    (root / "sub" / "deeper" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "sub" / "deeper" / "run.sh").chmod(0o755)
    (root / "link").symlink_to("sub/small-1.txt")
    return root


@dataclass
class Stored:
    repo_url: str
    repo_dir: Path
    volumes: dict[str, Path]
    snapshots: dict[str, str]

    def resolved(self, url: str = VERSION_URL, names: tuple[str, ...] | None = None) -> Resolved:
        parsed = parse_url(url)
        members = tuple(
            Member(
                volume=name,
                role="workspace" if i == 0 else "data",
                snapshot_id=self.snapshots[name],
                repository=self.repo_url,
                size=sum(p.stat().st_size for p in self.volumes[name].rglob("*") if p.is_file()),
                url=format_url(parsed.namespace, parsed.bucket, parsed.file, parsed.version, name),
            )
            for i, name in enumerate(self.volumes)
            if names is None or name in names
        )
        version = Version(
            id=parsed.version or "k3x9q2mf",
            url=parsed.version_url,
            namespace=parsed.namespace,
            bucket=parsed.bucket,
            file=parsed.file or "train",
            workflow_uid="wf-1",
            run_id="run-1",
            step_id="step-2",
            phase="after",
            taken_at=datetime.now(UTC),
            status="complete",
            volumes=tuple(self.volumes),
            members=members,
        )
        return Resolved(url=url, version=version, members=members)


@dataclass
class FakeRegistry:
    """Answers ``rok.registry.resolve.v1`` from a table of URL → Resolved, refusing other namespaces' URLs."""

    answers: dict[str, Resolved] = field(default_factory=dict)
    asked: list[Resolve] = field(default_factory=list)

    async def on_resolve(self, msg: Msg) -> None:
        query = Resolve.model_validate_json(msg.data)
        self.asked.append(query)
        parsed = parse_url(query.url)
        if parsed.namespace != query.namespace:
            reply = Reply(
                error=ErrorBody(
                    kind="forbidden",
                    message=f"{query.url} belongs to namespace {parsed.namespace!r}, not {query.namespace!r}",
                )
            )
        elif query.url in self.answers:
            reply = Reply(result=self.answers[query.url].model_dump(mode="json"))
        else:
            reply = Reply(error=ErrorBody(kind="not_found", message=f"no version {parsed.version!r} is recorded"))
        await msg.respond(reply.model_dump_json().encode())


@dataclass
class Outcomes:
    """Restore outcomes and progress as they appear on the bus."""

    completed: list[RestoreCompleted] = field(default_factory=list)
    failed: list[RestoreFailed] = field(default_factory=list)
    progress: list[RestoreProgress] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, request_id: str, timeout: float = 15.0) -> RestoreCompleted | RestoreFailed:
        async def one() -> RestoreCompleted | RestoreFailed:
            while True:
                for event in [*self.completed, *self.failed]:
                    if event.request_id == request_id:
                        return event
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(one(), timeout)


def request(request_id: str, target: Path | PvcTarget | NotebookTarget, **fields: object) -> RestoreRequested:
    """A restore request into ``target`` (a path means a directory), of VERSION_URL in NAMESPACE by default."""
    values: dict[str, object] = {"namespace": NAMESPACE, "url": VERSION_URL}
    values["target"] = DirectoryTarget(path=str(target)) if isinstance(target, Path) else target
    values.update(fields)
    return RestoreRequested.make(request_id=request_id, **values)


async def ask(js: JetStreamContext, event: RestoreRequested) -> None:
    await bus.publish(js, event)


async def settled(js: JetStreamContext) -> ConsumerInfo:
    """The restorer's consumer once it acknowledged what it was handling (the ack follows the outcome)."""
    for _ in range(100):
        info = await js.consumer_info(streams.RESTORES.name, DURABLE)
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
    return info
