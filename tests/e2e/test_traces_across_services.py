"""One trace follows a step event from its publish through the snapshotter (and its store operations) to the
registry's commit, and one follows a restore from its request to its completion — across processes, read from
the spans each process appends to ROK_OTEL_FILE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from rokcommon import subjects
from rokcommon.events import DirectoryTarget, RestoreCompleted, RestoreRequested
from rokcommon.telemetry import setup_telemetry

from .system import NAMESPACE, PipelineRun, System

pytestmark = pytest.mark.slow


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


def volumes(root: Path) -> dict[str, Path]:
    paths = {"workspace": root / "workspace", "data": root / "data"}
    for name, path in paths.items():
        path.mkdir(parents=True)
        (path / "a.txt").write_text(f"{name}\n")
    return paths


async def test_one_trace_covers_a_step_event_its_snapshots_and_the_registry_commit(
    system: System, tracer: tuple[Tracer, InMemorySpanExporter], tmp_path: Path
) -> None:
    test_tracer, exporter = tracer
    await system.start()
    vols = volumes(tmp_path / "volumes")
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
    system: System, tracer: tuple[Tracer, InMemorySpanExporter], tmp_path: Path
) -> None:
    test_tracer, _ = tracer
    await system.start()
    run = PipelineRun(system, volumes(tmp_path / "volumes"))
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
