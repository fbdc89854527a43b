"""Runs and restores through the real services, each in its own process, on one shared system: a three-step run
over two volumes is recorded with its lineage and tags and the state after a step restores byte for byte; one
trace follows a step event from its publish through the snapshotter (and its store operations) to the registry's
commit, and one follows a restore from request to completion — read from the spans each process appends to
ROK_OTEL_FILE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from rokcommon import subjects
from rokcommon.events import DirectoryTarget, RestoreCompleted, RestoreRequested
from rokcommon.registry_contract import Version
from rokcommon.telemetry import setup_telemetry

from .system import NAMESPACE, PipelineRun, System, eventually, tree

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


def volumes(root: Path) -> dict[str, Path]:
    workspace, data = root / "workspace", root / "data"
    (workspace / "src").mkdir(parents=True)
    data.mkdir()
    (workspace / "src" / "train.py").write_text("print('training')\n")
    (workspace / "requirements.txt").write_text("numpy\n")
    (data / "raw.csv").write_text("".join(f"{i},{i * i}\n" for i in range(5000)))
    return {"workspace": workspace, "data": data}


def members(version: Version | None) -> list[str]:
    assert version is not None
    return [m.volume for m in version.members]


async def test_a_three_step_run_is_recorded_with_its_lineage_and_a_step_restores_byte_identical(
    shared_system: System, tmp_path: Path
) -> None:
    system = shared_system
    vols = volumes(tmp_path / "volumes")
    ws, data = vols["workspace"], vols["data"]
    run = PipelineRun(system, vols)

    def prepare() -> None:
        (data / "clean.csv").write_text((data / "raw.csv").read_text().replace(",", ";"))
        (data / "raw.csv").unlink()

    def train() -> None:
        (ws / "model.bin").write_bytes(bytes(range(256)) * 4096)
        (ws / "src" / "train.py").write_text("print('trained')\n")
        (ws / "src" / "run.sh").write_text("#!/bin/sh\n")
        (ws / "src" / "run.sh").chmod(0o755)

    def evaluate() -> None:
        (ws / "metrics.json").write_text('{"accuracy": 0.9}\n')
        (data / "clean.csv").write_text("replaced\n")

    await run.begin()
    steps = [
        await run.play_step(name, effect)
        for name, effect in (("prepare", prepare), ("train", train), ("evaluate", evaluate))
    ]
    await run.end()

    lineage = await system.lineage(run.commits[("initial", "initial")])
    assert lineage.file.run_id == run.run.run_id
    assert lineage.initial is not None and lineage.initial.tags == ("initial",)
    assert members(lineage.initial) == ["workspace", "data"]
    assert [s.step_id for s in lineage.steps] == [s.step_id for s in steps]
    assert [s.name for s in lineage.steps] == ["prepare", "train", "evaluate"]
    for recorded in lineage.steps:
        assert recorded.before is not None and recorded.after is not None
        assert (recorded.before.phase, recorded.after.phase) == ("before", "after")
        assert members(recorded.before) == members(recorded.after) == ["workspace", "data"]
        assert recorded.before.status == recorded.after.status == "complete"
        assert recorded.outcome == "succeeded"
        assert "failed" not in recorded.after.tags
    # the versions are the ones announced, and their snapshots differ exactly where the steps changed things
    for step, recorded in zip(steps, lineage.steps, strict=True):
        assert recorded.after is not None
        assert recorded.after.url == run.commits[(step.name, "after")].url

    # the final tag lands on the run's last after-version once the run finished
    async def final_tagged() -> bool:
        latest = await system.lineage(run.commits[("initial", "initial")])
        return latest.steps[-1].after is not None and "final" in latest.steps[-1].after.tags

    assert await eventually(final_tagged, 15), "the run's last after-version was not tagged final"

    # restore the state after step 2 ("train"): both volumes, byte for byte what they held then
    target = tmp_path / "restored"
    outcome = await system.restore(run.commits[("train", "after")].url, target)
    assert isinstance(outcome, RestoreCompleted), outcome
    assert sorted(p.name for p in target.iterdir()) == ["data", "workspace"]
    held = run.held[("train", "after")]
    assert tree(target / "workspace") == held["workspace"]
    assert tree(target / "data") == held["data"]
    assert tree(target / "workspace") != tree(ws)  # the volumes moved on since; the restore did not follow them
    assert outcome.namespace == NAMESPACE


async def test_a_failed_step_keeps_its_after_version_tagged_failed(shared_system: System, tmp_path: Path) -> None:
    vols = small_volumes(tmp_path / "volumes")
    run = PipelineRun(shared_system, vols)
    await run.begin()

    def crash() -> None:
        (vols["workspace"] / "traceback.txt").write_text("ZeroDivisionError\n")

    await run.play_step("train", crash, outcome="failed")
    await run.end("failed")
    lineage = await shared_system.lineage(run.commits[("train", "after")])
    [step] = lineage.steps
    assert step.outcome == "failed"
    assert step.after is not None and "failed" in step.after.tags
    assert step.before is not None and "failed" not in step.before.tags

    async def run_failed() -> bool:
        return (await shared_system.lineage(run.commits[("train", "after")])).file.status == "failed"

    assert await eventually(run_failed, 15)
    target = tmp_path / "restored"  # the state people most want to inspect
    outcome = await shared_system.restore(step.after.url, target)
    assert isinstance(outcome, RestoreCompleted), outcome
    assert (target / "workspace" / "traceback.txt").read_text() == "ZeroDivisionError\n"


@pytest.fixture
def tracer() -> tuple[Tracer, InMemorySpanExporter]:
    """This process's tracer (the test plays the watcher or the CLI), its spans kept in memory."""
    telemetry = setup_telemetry("e2e-test")
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return telemetry.tracer_provider.get_tracer("e2e"), exporter


def in_trace(system: System, trace_id: str) -> dict[str, set[str]]:
    """service → names of its spans in the trace."""
    found: dict[str, set[str]] = {}
    for span in system.spans():
        if span["trace_id"] == trace_id:
            found.setdefault(span["service"], set()).add(span["name"])
    return found


async def spans_of(system: System, trace_id: str, wanted: dict[str, set[str]], timeout: float = 10) -> dict[str, Any]:
    """Wait for the processes' exporters to write the wanted spans (they batch every 0.2 s)."""

    def complete() -> dict[str, set[str]] | None:
        found = in_trace(system, trace_id)
        return found if all(names <= found.get(service, set()) for service, names in wanted.items()) else None

    try:
        return await system.until(complete, timeout, f"spans {wanted}")  # type: ignore[no-any-return]
    except AssertionError:
        raise AssertionError(f"spans of trace {trace_id}: {in_trace(system, trace_id)}; wanted {wanted}") from None


def small_volumes(root: Path) -> dict[str, Path]:
    paths = {"workspace": root / "workspace", "data": root / "data"}
    for name, path in paths.items():
        path.mkdir(parents=True)
        (path / "a.txt").write_text(f"{name}\n")
    return paths


async def test_one_trace_covers_a_step_event_its_snapshots_and_the_registry_commit(
    shared_system: System, tracer: tuple[Tracer, InMemorySpanExporter], tmp_path: Path
) -> None:
    test_tracer, exporter = tracer
    system = shared_system
    vols = small_volumes(tmp_path / "volumes")
    run = PipelineRun(system, vols)
    await run.begin()
    (vols["data"] / "new.bin").write_bytes(bytes(range(256)) * 8192)  # new content: a pack is uploaded
    step = run.step("train")
    with test_tracer.start_as_current_span("pipeline-watcher saw a step start") as root:
        await system.publish(run.step_started(step))
    await run.wait(step, "before")

    trace_id = format(root.get_span_context().trace_id, "032x")
    published = [
        s for s in exporter.get_finished_spans() if s.name == f"{subjects.STEP_STARTED}.e2e-node_cluster_local publish"
    ]
    assert published and format(published[0].context.trace_id, "032x") == trace_id
    found = await spans_of(
        system,
        trace_id,
        {
            "rok-snapshotter": {
                "rok.store.snapshot",
                "rok.store.pack.upload",
                f"{subjects.SNAPSHOT_COMPLETED} publish",
            },
            "rok-registry": {
                "registry record SnapshotCompleted",
                "registry db commit",
                f"{subjects.VERSION_COMMITTED} publish",
            },
        },
    )
    consumer_spans = [
        s
        for s in system.spans()
        if s["trace_id"] == trace_id and s["service"] == "rok-snapshotter" and s["kind"] == "CONSUMER"
    ]
    assert consumer_spans, found  # the snapshotter's processing of the step event itself is in the trace


async def test_one_trace_covers_a_restore_from_request_to_completion(
    shared_system: System, tracer: tuple[Tracer, InMemorySpanExporter], tmp_path: Path
) -> None:
    test_tracer, _ = tracer
    system = shared_system
    run = PipelineRun(system, small_volumes(tmp_path / "volumes"))
    initial = await run.begin()
    request = RestoreRequested.make(
        request_id="traced-restore",
        namespace=NAMESPACE,
        url=initial.url,
        target=DirectoryTarget(path=str(tmp_path / "restored")),
    )
    with test_tracer.start_as_current_span("user asks for a restore") as root:
        await system.publish(request)
    outcome = await system.until(lambda: system.restores.get("traced-restore"), 30, "the restore")
    assert isinstance(outcome, RestoreCompleted), outcome
    trace_id = format(root.get_span_context().trace_id, "032x")
    await spans_of(
        system,
        trace_id,
        {
            "rok-restorer": {
                "rok.restore",
                "rok.restore.volume",
                f"{subjects.registry_query('resolve')} request",
                "rok.store.restore",
                "rok.store.pack.download",
                f"{subjects.RESTORE_COMPLETED} publish",
            },
        },
    )
    registry = in_trace(system, trace_id).get("rok-registry", set())
    assert registry, "the registry's answer to the restorer's resolve is not in the restore's trace"
