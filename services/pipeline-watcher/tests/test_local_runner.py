"""The local runner: the notebook's volumes snapshotted and cloned, each step between two committed snapshots."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
from pathlib import Path

import pytest
from notebook_files import cell, write_notebook
from rok_pipeline_watcher.notebook.local import notebook_run
from rok_pipeline_watcher.runner.engine import Runner, StepFailedError
from rok_pipeline_watcher.runner.pipeline import PipelineError, check_roots, load
from rokcommon.errors import TemporaryError
from rokcommon.events import (
    RestoreCompleted,
    RestoredVolume,
    RestoreRequested,
    RunFinished,
    RunStarted,
    StepFinished,
    StepRef,
    StepStarted,
    VersionCommitted,
)


class FakeBus:
    """Plays snapshotter + registry + restorer: every event is committed (or cloned) when the test lets it."""

    def __init__(self, hold=(), lost=()):
        self.lost = set(lost)  # (step name or None, phase) that never get committed
        self.log: list[tuple] = []
        self.events: list = []
        self.held = {key: asyncio.Event() for key in hold}  # (step name or None, phase) → released?
        self.waiting: asyncio.Queue = asyncio.Queue()
        self._steps: dict[str, StepRef] = {}
        self._restores: dict[str, RestoreCompleted] = {}

    async def publish(self, event):
        self.events.append(event)
        self.log.append(("publish", type(event).__name__, getattr(getattr(event, "step", None), "name", None)))
        if isinstance(event, StepStarted):
            self._steps[event.step.step_id] = event.step
        if isinstance(event, RestoreRequested):  # the restorer: one sub-directory per volume
            target = Path(event.target.path)
            started = next(e for e in self.events if isinstance(e, RunStarted))
            volumes = []
            for volume in started.volumes:
                shutil.copytree(volume.path, target / volume.name)
                volumes.append(
                    RestoredVolume(
                        name=volume.name,
                        snapshot_id="s",
                        location=str(target / volume.name),
                        files=1,
                        bytes=1,
                        seconds=0.0,
                    )
                )
            self._restores[event.request_id] = RestoreCompleted.make(
                request_id=event.request_id,
                namespace=event.namespace,
                url=event.url,
                volumes=tuple(volumes),
                seconds=0.0,
            )

    async def committed(self, key, timeout):
        ref = self._steps.get(key.step_id) if key.step_id else None
        step, phase = (ref.name if ref else None), key.phase
        self.log.append(("wait", phase, step))
        await self.waiting.put((step, phase))
        if (step, phase) in self.held:
            await self.held[(step, phase)].wait()
        if (step, phase) in self.lost:
            return None
        run = next(e for e in self.events if isinstance(e, RunStarted)).run
        return VersionCommitted.make(run=run, step=ref, phase=phase, url=f"rok://local/{step or 'run'}/{phase}")

    async def settled(self, run_url, timeout):
        self.log.append(("wait", "settled", None))
        return any(isinstance(e, RunFinished) for e in self.events)

    async def restored(self, request_id, timeout):
        self.log.append(("wait", "restore", None))
        return self._restores[request_id]


@pytest.fixture
def notebook(tmp_path):
    home, data = tmp_path / "notebook" / "home", tmp_path / "notebook" / "data"
    home.mkdir(parents=True)
    data.mkdir()
    (data / "input.csv").write_text("1,2,3\n")
    return tmp_path


def pipeline_file(root, steps):
    path = root / "pipeline.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            pipeline: churn-model
            experiment: churn
            volumes:
              - name: workspace
                path: ./notebook/home
              - name: data
                path: ./notebook/data
            steps:
            """
        )
        + textwrap.indent(textwrap.dedent(steps), "  ")
    )
    return path


def runner(root, steps, bus):
    return Runner(load(pipeline_file(root, steps)), bus, runs_dir=root / "runs", namespace="local", node="laptop")


TWO_STEPS = """\
- name: prepare
  run: echo prepare >> log.txt && cp "$ROK_VOLUME_DATA/input.csv" prepared.csv
- name: train
  run: echo train >> log.txt
  after: [prepare]
"""


async def test_steps_run_in_order_each_between_its_committed_before_and_after_snapshots_in_a_clone(notebook):
    bus = FakeBus()
    run = runner(notebook, TWO_STEPS, bus)

    result = await run.run()

    assert bus.log == [
        ("publish", "RunStarted", None),
        ("wait", "initial", None),
        ("publish", "RestoreRequested", None),
        ("wait", "restore", None),
        ("publish", "StepStarted", "prepare"),
        ("wait", "before", "prepare"),
        ("publish", "StepFinished", "prepare"),
        ("wait", "after", "prepare"),
        ("publish", "StepStarted", "train"),
        ("wait", "before", "train"),
        ("publish", "StepFinished", "train"),
        ("wait", "after", "train"),
        ("publish", "RunFinished", None),
        ("wait", "settled", None),  # rok run returns once the registry settled the run's final version
    ]
    workspace = run.run_dir / "workspace"
    assert (workspace / "log.txt").read_text() == "prepare\ntrain\n"
    assert (workspace / "prepared.csv").read_text() == "1,2,3\n"
    assert list((notebook / "notebook" / "home").iterdir()) == []  # the notebook's own directory is untouched
    assert result.succeeded == ["prepare", "train"]
    assert bus.events[-1].outcome == "succeeded"


async def test_the_events_describe_the_notebook_volumes_then_the_run_clones_workspace_first(notebook):
    bus = FakeBus()
    run = runner(notebook, TWO_STEPS, bus)

    await run.run()

    started = next(e for e in bus.events if isinstance(e, RunStarted))
    step = next(e for e in bus.events if isinstance(e, StepStarted))
    assert (started.pipeline_name, started.experiment, started.node) == ("churn-model", "churn", "laptop")
    assert [(v.name, v.role, v.path) for v in started.volumes] == [
        ("workspace", "workspace", str(notebook / "notebook" / "home")),
        ("data", "data", str(notebook / "notebook" / "data")),
    ]
    assert [(v.name, v.role, v.path) for v in step.volumes] == [
        ("workspace", "workspace", str(run.run_dir / "workspace")),
        ("data", "data", str(run.run_dir / "data")),
    ]
    assert step.subject_for() == "rok.step.started.v1.laptop"


async def test_the_runner_guards_its_steps_so_their_snapshots_are_not_best_effort(notebook):
    bus = FakeBus()
    await runner(notebook, TWO_STEPS, bus).run()

    steps = [e for e in bus.events if isinstance(e, StepStarted | StepFinished)]
    assert len(steps) == 4
    assert all(e.guarded for e in steps)


async def test_a_step_runs_only_once_its_before_snapshot_is_committed_and_its_dependent_after_its_after_snapshot(
    notebook,
):
    bus = FakeBus(hold=[("prepare", "before"), ("prepare", "after")])
    run = runner(notebook, TWO_STEPS, bus)
    log = lambda: run.run_dir / "workspace" / "log.txt"  # noqa: E731
    task = asyncio.create_task(run.run())

    while await bus.waiting.get() != ("prepare", "before"):
        pass
    assert not log().exists()
    bus.held[("prepare", "before")].set()
    while await bus.waiting.get() != ("prepare", "after"):
        pass
    assert log().read_text() == "prepare\n"
    assert not any(isinstance(e, StepStarted) and e.step.name == "train" for e in bus.events)
    bus.held[("prepare", "after")].set()
    await asyncio.wait_for(task, 20)
    assert log().read_text() == "prepare\ntrain\n"


async def test_a_failing_step_gets_its_after_snapshot_its_dependents_do_not_run_and_the_run_fails_naming_it(notebook):
    bus = FakeBus()
    run = runner(
        notebook,
        """\
        - name: prepare
          run: exit 3
        - name: train
          run: echo train >> log.txt
          after: [prepare]
        """,
        bus,
    )

    with pytest.raises(StepFailedError, match=r"step 'prepare' failed with exit code 3; not run: train"):
        await run.run()

    finished = next(e for e in bus.events if isinstance(e, StepFinished))
    assert (finished.step.name, finished.outcome) == ("prepare", "failed")
    assert ("wait", "after", "prepare") in bus.log
    assert not any(isinstance(e, StepStarted) and e.step.name == "train" for e in bus.events)
    assert isinstance(bus.events[-1], RunFinished)
    assert bus.events[-1].outcome == "failed"
    assert not (run.run_dir / "workspace" / "log.txt").exists()


async def test_independent_steps_run_side_by_side_and_a_join_waits_for_both(notebook):
    bus = FakeBus(hold=[("left", "after")])
    run = runner(
        notebook,
        """\
        - name: left
          run: echo left >> left.txt
        - name: right
          run: echo right >> right.txt
        - name: join
          run: cat left.txt right.txt > joined.txt
          after: [left, right]
        """,
        bus,
    )
    task = asyncio.create_task(run.run())

    seen = set()
    while seen != {("left", "after"), ("right", "after")}:
        got = await bus.waiting.get()
        if got[1] == "after":
            seen.add(got)
    assert not any(isinstance(e, StepStarted) and e.step.name == "join" for e in bus.events)
    bus.held[("left", "after")].set()
    await asyncio.wait_for(task, 20)

    assert (run.run_dir / "workspace" / "joined.txt").read_text() == "left\nright\n"


async def test_a_snapshot_never_committed_stops_the_run_saying_what_is_missing_and_records_its_end(notebook):
    bus = FakeBus(lost=[("train", "before")])
    run = runner(notebook, TWO_STEPS, bus)

    with pytest.raises(TemporaryError, match=r"no before-snapshot of step 'train' was committed within 600s"):
        await run.run()

    assert not (run.run_dir / "workspace" / "log.txt").read_text().count("train")
    assert isinstance(bus.events[-1], RunFinished)
    assert bus.events[-1].outcome == "error"


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ("- name: a\n  run: x\n  after: [b]\n", "step 'a' runs after 'b', which is not a step"),
        ("- name: a\n  run: x\n  after: [b]\n- name: b\n  run: y\n  after: [a]\n", "wait for each other (a cycle)"),
        ("- name: a\n  run: x\n- name: a\n  run: y\n", "step names must be unique: a"),
        ("- name: Bad_Name\n  run: x\n", "step name 'Bad_Name' must be lower-case"),
    ],
)
def test_a_wrong_pipeline_file_is_refused_with_what_is_wrong(notebook, steps, problem):
    with pytest.raises(PipelineError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load(pipeline_file(notebook, steps))


def test_a_volume_that_is_not_a_directory_is_refused_naming_it(notebook):
    shutil.rmtree(notebook / "notebook" / "data")

    with pytest.raises(PipelineError, match=r"volume 'data' is .*notebook/data, which is not a directory"):
        load(pipeline_file(notebook, "- name: a\n  run: x\n"))


def test_a_volume_outside_the_snapshotters_roots_is_refused_before_the_run_starts(notebook, tmp_path):
    path = pipeline_file(notebook, "- name: a\n  run: x\n")
    pipeline = load(path)
    check_roots(pipeline, [tmp_path / "notebook"], path)  # both volumes are in it

    with pytest.raises(
        PipelineError, match=r"volume 'workspace' is .*/notebook/home, outside .* \(ROK_VOLUME_ROOTS: /srv:"
    ):
        check_roots(pipeline, [Path("/srv"), tmp_path / "notebook" / "data"], path)


async def test_no_more_steps_run_at_once_than_the_parallelism_allows(notebook):
    bus = FakeBus(hold=[("left", "after")])
    run = Runner(
        load(pipeline_file(notebook, "- name: left\n  run: 'true'\n- name: right\n  run: 'true'\n")),
        bus,
        runs_dir=notebook / "runs",
        namespace="local",
        node="laptop",
        parallelism=1,
    )
    task = asyncio.create_task(run.run())
    while await bus.waiting.get() != ("left", "after"):
        pass
    assert not any(isinstance(e, StepStarted) and e.step.name == "right" for e in bus.events)
    bus.held[("left", "after")].set()
    await asyncio.wait_for(task, 20)
    assert run.result.succeeded == ["left", "right"]


def _notebook_run(tmp_path, cells, bus):
    directory = tmp_path / "nb"
    directory.mkdir()
    path = write_notebook(directory / "nb.ipynb", [cell(source, *tags) for source, *tags in cells])
    pipeline, launcher = notebook_run(path, (), (), None)
    return Runner(pipeline, bus, runs_dir=tmp_path / "runs", namespace="local", node="laptop", launcher=launcher)


async def test_a_notebooks_metrics_end_the_run_with_it(tmp_path):
    bus = FakeBus()
    run = _notebook_run(
        tmp_path,
        [
            ("score = 0.5", "step:first"),
            ("score = score + 0.25", "step:second", "prev:first"),
            ("print(score)", "pipeline-metrics"),
        ],
        bus,
    )
    result = await run.run()
    assert result.metrics == {"score": 0.75}
    assert isinstance(bus.events[-1], RunFinished) and bus.events[-1].metrics == {"score": 0.75}


async def test_a_notebook_step_that_cannot_save_a_variable_fails_the_run_saying_why(tmp_path):
    bus = FakeBus()
    run = _notebook_run(
        tmp_path,
        [
            ("import threading", "imports"),
            ("lock = threading.Lock()", "step:make"),
            ("with lock:\n    done = True", "step:use", "prev:make"),
        ],
        bus,
    )
    with pytest.raises(StepFailedError) as failed:
        await run.run()
    assert str(failed.value).startswith(
        "step 'make' failed with exit code 3 (cannot save variable lock (a _thread.lock) for the steps after it"
    )
    assert str(failed.value).endswith("; not run: use")
    assert ("wait", "after", "make") in bus.log and bus.events[-1].outcome == "failed"
