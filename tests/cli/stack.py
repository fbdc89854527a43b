"""The whole system on this machine for a test module: ``rok up`` in a temporary state dir, a run through it.

``rok up`` starts its own nats-server on a free port (nothing answers there), the four services, and the
registry's web pages on another free port. :func:`scripted_run` then plays a three-step pipeline run the way
the local runner does — publish a step event, wait until the registry has committed the version, go on — so the
tests need nothing but the services; what each volume held after every step is kept for comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.js.api import DeliverPolicy
from rokcli import main
from rokcommon import bus, streams, subjects
from rokcommon.credentials import connect_options, web_token
from rokcommon.events import (
    RunFinished,
    RunRef,
    RunStarted,
    StepFinished,
    StepRef,
    StepStarted,
    VersionCommitted,
    VolumeRef,
)
from rokcommon.permissions import RUNNER
from rokcommon.settings import RokSettings
from roktesting.ports import free_port

NODE = "rok-test-node"
NAMESPACE = "local"


@dataclass
class Result:
    code: int
    out: str
    err: str


def rok(*args: str) -> Result:
    """Run ``rok ARGS`` in this process, as its console script would, and capture what it prints."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["rok", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
    return Result(code, out.getvalue(), err.getvalue())


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (relative path → content), to compare a restore with the original."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """The ``ROK_*`` settings of one stack, for the duration of one command (and nothing else)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield


@dataclass
class Stack:
    state_dir: Path
    env: dict[str, str]
    web_url: str
    volumes: dict[str, Path]
    # (step name, phase) → {volume: tree}; what each volume held when that version was taken
    held: dict[tuple[str, str], dict[str, dict[str, bytes]]] = field(default_factory=dict)
    committed: dict[tuple[str, str], VersionCommitted] = field(default_factory=dict)
    run_id: str = ""

    @property
    def nats_url(self) -> str:
        return self.env["ROK_NATS_URL"]

    @property
    def token(self) -> str:
        """The local user's web token, as ``rok up`` wrote it (the pages and the HTTP API ask for it)."""
        return web_token(self.state_dir)

    def rok(self, *args: str, **overrides: str) -> Result:
        """``rok ARGS`` with this stack's settings (``overrides`` replace some of them)."""
        with environment({**self.env, **overrides}):
            return rok(*args)


def new_stack(root: Path) -> Stack:
    """The settings of a stack under ``root``: its own nats-server port (nothing answers there) and web port."""
    web_port = free_port()
    env = {
        "ROK_STATE_DIR": str(root / "state"),
        "ROK_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "ROK_REGISTRY_PORT": str(web_port),
        "ROK_NODE_NAME": NODE,
        "ROK_NAMESPACE": NAMESPACE,
        "ROK_LOG_LEVEL": "INFO",
        "ROK_VOLUME_ROOTS": str(root.parent),  # pytest's base temporary directory: every test's volumes are in it
    }
    volumes = {"workspace": root / "notebook" / "workspace", "data": root / "notebook" / "data"}
    return Stack(root / "state", env, f"http://127.0.0.1:{web_port}", volumes)


@contextlib.contextmanager
def local_stack(root: Path) -> Iterator[Stack]:
    """``rok up`` with everything under ``root``; ``rok down`` afterwards, whatever happened."""
    if shutil.which("nats-server") is None:
        pytest.fail("nats-server is not installed: run `make setup` (or `apt-get install nats-server`)", pytrace=False)
    stack = new_stack(root)
    try:
        up = stack.rok("up", "--json")
        assert up.code == 0, f"rok up failed: {up.err}"
        for path in stack.volumes.values():
            path.mkdir(parents=True)
        yield stack
    finally:
        stack.rok("down")


class _Shared:
    stack: Stack | None = None
    users = 0
    context: contextlib.AbstractContextManager[Stack] | None = None


@contextlib.contextmanager
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack with one recorded run for every test of the session that asks (the CLI's and the web's)."""
    if _Shared.stack is None:
        context = local_stack(tmp_path_factory.mktemp("rok"))
        stack = context.__enter__()
        try:
            asyncio.run(scripted_run(stack))
        except BaseException:
            context.__exit__(None, None, None)
            raise
        _Shared.stack, _Shared.context = stack, context
    _Shared.users += 1
    try:
        yield _Shared.stack
    finally:
        _Shared.users -= 1
        if _Shared.users == 0 and _Shared.context is not None:
            context, _Shared.stack, _Shared.context = _Shared.context, None, None
            context.__exit__(None, None, None)


def install(ws: Path, data: Path) -> None:
    (ws / "lib" / "tinyfit").mkdir(parents=True)
    (ws / "lib" / "tinyfit" / "__init__.py").write_text("def fit(xs, ys):\n    return 2.0, 1.0\n")


def prepare(ws: Path, data: Path) -> None:
    (data / "points.csv").write_text("x,y\n" + "".join(f"{i},{2 * i + 1}\n" for i in range(200)))
    (ws / "notes.txt").write_text("prepared the points\n")


def train(ws: Path, data: Path) -> None:
    (ws / "model.json").write_text('{"slope": 2.0, "intercept": 1.0}\n')
    (ws / "notes.txt").write_text("prepared the points\ntrained the model\n")


STEPS: list[tuple[str, Callable[[Path, Path], None]]] = [("install", install), ("prepare", prepare), ("train", train)]


async def scripted_run(stack: Stack, *, experiment: str = "demo-experiment", timeout: float = 30.0) -> None:
    """Play a three-step run over the stack's two volumes, waiting for each version as the local runner does."""
    run = RunRef(namespace=NAMESPACE, run_id=f"run-{uuid.uuid4().hex[:8]}", workflow_uid=str(uuid.uuid4()))
    stack.run_id = run.run_id
    volumes = (
        VolumeRef(name="workspace", role="workspace", path=str(stack.volumes["workspace"])),
        VolumeRef(name="data", role="data", path=str(stack.volumes["data"])),
    )
    # as the local runner's NATS user, whose password rok up wrote into the state directory
    login = connect_options(RokSettings(state_dir=stack.state_dir), RUNNER)
    nc = await nats.connect(stack.nats_url, **login)  # type: ignore[arg-type]
    commits: asyncio.Queue[VersionCommitted] = asyncio.Queue()

    async def on_commit(msg: nats.aio.msg.Msg) -> None:
        event = VersionCommitted.decode(msg.data)
        if event.run.workflow_uid == run.workflow_uid:
            await commits.put(event)

    js = nc.jetstream()
    await streams.ensure_streams(js)
    await js.subscribe(
        subjects.VERSION_COMMITTED, cb=on_commit, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
    )

    async def committed(step: str, phase: str) -> None:
        while True:  # a re-published commit of an earlier version is not the one we wait for
            event = await asyncio.wait_for(commits.get(), timeout)
            if (event.step.name if event.step else "initial", event.phase) == (step, phase):
                break
        stack.committed[(step, phase)] = event
        stack.held[(step, phase)] = {name: tree(path) for name, path in stack.volumes.items()}

    now = datetime.now(UTC)
    try:
        await bus.publish(
            js,
            RunStarted.make(
                run=run,
                run_name="demo run",
                pipeline_name="demo",
                experiment=experiment,
                node=NODE,
                volumes=volumes,
                started_at=now,
            ),
        )
        await committed("initial", "initial")
        for index, (name, effect) in enumerate(STEPS):
            step = StepRef(run=run, step_id=f"{run.run_id}-{index}", name=name)
            common = {"step": step, "node": NODE, "volumes": volumes, "guarded": True}
            await bus.publish(js, StepStarted.make(**common, started_at=_whole_seconds()))
            await committed(name, "before")
            effect(stack.volumes["workspace"], stack.volumes["data"])
            await bus.publish(js, StepFinished.make(**common, outcome="succeeded", finished_at=_whole_seconds()))
            await committed(name, "after")
        await bus.publish(js, RunFinished.make(run=run, outcome="succeeded", finished_at=_whole_seconds()))
    finally:
        await nc.close()


def _whole_seconds() -> datetime:
    """Workflow times have whole seconds (Argo's RFC 3339 timestamps): steps often start "at the same time"."""
    return datetime.now(UTC).replace(microsecond=0)
