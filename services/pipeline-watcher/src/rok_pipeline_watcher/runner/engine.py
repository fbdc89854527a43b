"""Running a local pipeline: snapshot and clone the notebook's volumes, then the steps, each between its two
committed snapshots.

1. ``RunStarted`` (from the notebook's volumes) → wait for the ``initial`` version's commit.
2. Clone that version through the restorer (``RestoreRequested`` into a directory of the run) → wait for
   ``RestoreCompleted``; the run's steps use the clones, the notebook's own directories are never touched.
3. For each step whose dependencies are done: ``StepStarted`` → wait for the ``before`` commit → run the
   command → ``StepFinished`` → wait for the ``after`` commit; only then may its dependents start. A step
   that fails still gets its after-snapshot (tagged ``failed`` by the snapshotter); its dependents do not
   run, and, as Argo's DAGs do by default, no new step starts (those running finish).
4. ``RunFinished`` → wait until the registry recorded it, so that when ``rok run`` returns the run's last
   version already carries its ``final`` tag.

Every event comes out of the translator, from the run's Argo-shaped state (:mod:`.workflow`). The bus is
behind :class:`Bus`, so the order of things can be tested without a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rokcommon.errors import RokError, TemporaryError
from rokcommon.events import DirectoryTarget, Event, RestoreCompleted, RestoreRequested, VersionCommitted
from rokcommon.versions import VersionKey

from rok_pipeline_watcher.runner.pipeline import Pipeline
from rok_pipeline_watcher.runner.workflow import LocalWorkflow
from rok_pipeline_watcher.translator import Translator

log = logging.getLogger(__name__)


class Bus(Protocol):
    async def publish(self, event: Event) -> None: ...

    async def committed(self, key: VersionKey, timeout: float) -> VersionCommitted | None:
        """The commit of the version ``key`` names, or None on timeout."""

    async def restored(self, request_id: str, timeout: float) -> RestoreCompleted:
        """The restore's outcome; raises :class:`RestoreFailedError` when it failed or did not end in time."""

    async def settled(self, run_url: str, timeout: float) -> bool:
        """Whether the registry recorded the end of the run ``run_url`` names (and so settled its ``final``
        version) within ``timeout`` seconds."""


class StepLauncher(Protocol):
    """What runs a step's work once its before-snapshot is committed: a shell command by default (the
    pipeline file's ``run``), a notebook's cells for ``rok run NOTEBOOK.ipynb``."""

    async def launch(self, step: str, workspace: Path, env: dict[str, str]) -> int:
        """Run the step ``step`` in the run's ``workspace`` clone; its exit code."""

    def failure(self, step: str) -> str | None:
        """Why the step failed, in one line, if the launcher knows more than its exit code."""

    def metrics(self) -> dict[str, float]:
        """The run's metrics the steps so far reported."""


class ShellSteps:
    """Each step's ``run``, a shell command, in the run's workspace."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def launch(self, step: str, workspace: Path, env: dict[str, str]) -> int:
        process = await asyncio.create_subprocess_shell(self.pipeline.step(step).run, cwd=workspace, env=env)
        return await process.wait()

    def failure(self, step: str) -> str | None:
        return None

    def metrics(self) -> dict[str, float]:
        return {}


class RestoreFailedError(RokError):
    pass


class StepFailedError(RokError):
    """A step failed: its dependents did not run."""


@dataclass
class RunResult:
    run_id: str
    workflow_uid: str
    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)  # step → exit code
    skipped: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)  # "initial", "<step>/before", … → URL
    metrics: dict[str, float] = field(default_factory=dict)


class Runner:
    def __init__(
        self,
        pipeline: Pipeline,
        bus: Bus,
        *,
        runs_dir: Path,
        namespace: str,
        node: str,
        commit_timeout: float = 600.0,
        restore_timeout: float = 600.0,
        report: Callable[[str], None] = lambda line: None,
        run_id: str | None = None,
        launcher: StepLauncher | None = None,
        parallelism: int = 4,
    ) -> None:
        self.pipeline, self.bus, self.report = pipeline, bus, report
        self.launcher: StepLauncher = launcher or ShellSteps(pipeline)
        self.parallelism = max(1, parallelism)
        self.commit_timeout, self.restore_timeout = commit_timeout, restore_timeout
        run_id = run_id or str(uuid.uuid4())
        self.workflow = LocalWorkflow(
            pipeline, run_id=run_id, workflow_uid=str(uuid.uuid4()), namespace=namespace, node=node
        )
        self.run_dir = runs_dir / self.workflow.name
        self.translator = Translator()
        self.result = RunResult(run_id=run_id, workflow_uid=self.workflow.uid)

    async def _emit(self) -> None:
        for event in self.translator.translate(self.workflow.state()):
            await self.bus.publish(event)

    async def _committed(self, key: VersionKey, what: str) -> VersionCommitted:
        commit = await self.bus.committed(key, self.commit_timeout)
        if commit is None:
            raise TemporaryError(
                f"no {what} was committed within {self.commit_timeout:.0f}s: are the snapshotter and the "
                f"registry running (`rok status`, `rok up`)?"
            )
        return commit

    async def run(self) -> RunResult:
        """Run the pipeline; raises :class:`StepFailedError` naming the step that failed."""
        flow = self.workflow
        flow.start()
        await self._emit()
        try:
            self.report(f"run {flow.name}: snapshotting the notebook's volumes")
            initial = await self._committed(VersionKey.initial(flow.uid), "snapshot of the notebook's volumes")
            self.result.versions["initial"] = initial.url
            await self._clone(initial)
            await self._steps()
        except BaseException:
            flow.finish("Error")  # the run ends, recorded as such, whatever stopped it
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._emit(), 10)
            raise
        self.result.metrics = flow.metrics = self.launcher.metrics()
        flow.finish("Failed" if self.result.failed else "Succeeded")
        await self._emit()
        if not await self.bus.settled(initial.url, self.commit_timeout):
            raise TemporaryError(
                f"the registry did not record the end of run {flow.name} within {self.commit_timeout:.0f}s: is it "
                "running (`rok status`, `rok up`)?"
            )
        if self.result.failed:
            step, code = next(iter(self.result.failed.items()))
            skipped = f"; not run: {', '.join(self.result.skipped)}" if self.result.skipped else ""
            reason = self.launcher.failure(step)
            because = f" ({reason})" if reason else ""
            raise StepFailedError(f"step {step!r} failed with exit code {code}{because}{skipped}")
        self.report(f"run {flow.name}: succeeded")
        return self.result

    async def _clone(self, initial: VersionCommitted) -> None:
        request = RestoreRequested.make(
            request_id=f"{self.workflow.uid}-clone",
            namespace=self.workflow.namespace,
            url=initial.url,
            target=DirectoryTarget(path=str(self.run_dir)),
            requested_by="rok run",
        )
        self.report(f"run {self.workflow.name}: cloning {initial.url} into {self.run_dir}")
        await self.bus.publish(request)
        done = await self.bus.restored(request.request_id, self.restore_timeout)
        where = {v.name: Path(v.location) for v in done.volumes}
        missing = [v.name for v in self.pipeline.volumes if v.name not in where]
        if missing:
            raise RestoreFailedError(f"the clone of {initial.url} lacks the volumes {', '.join(missing)}")
        self.workflow.run_volumes = [(v.name, where[v.name]) for v in self.pipeline.volumes]

    async def _steps(self) -> None:
        done: set[str] = set()
        running: dict[str, asyncio.Task[None]] = {}
        pending = [s.name for s in self.pipeline.order()]
        while pending or running:
            if not self.result.failed:
                ready = [n for n in pending if set(self.pipeline.step(n).after) <= done]
                for name in ready[: self.parallelism - len(running)]:
                    pending.remove(name)
                    running[name] = asyncio.create_task(self._step(name), name=name)
            if not running:
                break
            finished, _ = await asyncio.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                name = task.get_name()
                del running[name]
                if task.exception() is not None:  # a lost commit, a bus error: stop the run
                    for other in running.values():
                        other.cancel()
                    await asyncio.gather(*running.values(), return_exceptions=True)
                    task.result()
                if name not in self.result.failed:
                    done.add(name)
        for name in pending:
            self.workflow.step_omitted(name)
            self.result.skipped.append(name)

    async def _step(self, name: str) -> None:
        flow, step = self.workflow, self.pipeline.step(name)
        node_id = flow.node_id(name)
        flow.step_pending(name)
        await self._emit()
        self.report(f"step {name}: waiting for its before-snapshot")
        before = await self._committed(
            VersionKey.of_step(flow.uid, node_id, 0, "before"), f"before-snapshot of step {name!r}"
        )
        self.result.versions[f"{name}/before"] = before.url
        flow.step_running(name)
        await self._emit()
        self.report(f"step {name}: running {step.run!r}")
        code = await self._execute(name)
        flow.step_done(name, code)
        await self._emit()
        self.report(
            f"step {name}: {'succeeded' if code == 0 else f'failed (exit code {code})'}; waiting for its after-snapshot"
        )
        after = await self._committed(
            VersionKey.of_step(flow.uid, node_id, 0, "after"), f"after-snapshot of step {name!r}"
        )
        self.result.versions[f"{name}/after"] = after.url
        if code == 0:
            self.result.succeeded.append(name)
        else:
            self.result.failed[name] = code

    async def _execute(self, name: str) -> int:
        """Run a step in the run's workspace, with every volume's path in the environment."""
        volumes = self.workflow.run_volumes
        env = dict(os.environ)
        for volume, path in volumes:
            env[f"ROK_VOLUME_{volume.upper().replace('-', '_')}"] = str(path)
        env.update(
            ROK_WORKSPACE=str(volumes[0][1]),
            ROK_RUN_ID=self.workflow.run_id,
            ROK_STEP=name,
        )
        return await self.launcher.launch(name, volumes[0][1], env)
