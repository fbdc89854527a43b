"""Restoring versions from the bus: the bytes come back identical, the layout is as documented, the repository
is left as it was, and a request that is delivered again ends the same way without restoring twice."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nats.aio.client import Client
from nats.js import JetStreamContext
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from restorer_testkit import NAMESPACE, VERSION_URL, FakeRegistry, Outcomes, Stored, ask, request, settled, tree
from rok_restorer.outcome_store import KvOutcomes
from rok_restorer.registry import RegistryCatalog
from rok_restorer.restoring import Record, Restorer
from rok_restorer.targets import Targets
from rokcommon import bus, streams, subjects
from rokcommon.events import RestoreCompleted, RestoreFailed
from rokcommon.service import Service
from rokcommon.telemetry import METRICS
from rokcommon.urls import format_url


def repository_objects(repo_dir: Path) -> dict[str, str]:
    """Every stored object but the lease locks, with a digest of its bytes."""
    return {
        str(p.relative_to(repo_dir)): hashlib.blake2b(p.read_bytes()).hexdigest()
        for p in repo_dir.rglob("*")
        if p.is_file() and not str(p.relative_to(repo_dir)).startswith("locks")
    }


async def test_a_version_of_two_volumes_is_restored_byte_identical_one_directory_per_volume(
    stored: Stored, registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    target = tmp_path / "restored"
    before = repository_objects(stored.repo_dir)
    await ask(js, request("r-two", target))
    outcome = await outcomes.wait("r-two")
    assert isinstance(outcome, RestoreCompleted), outcome
    assert sorted(os.listdir(target)) == ["data", "workspace"]
    for name, source in stored.volumes.items():
        assert tree(target / name) == tree(source), name
    assert [(v.name, v.snapshot_id, v.location) for v in outcome.volumes] == [
        ("workspace", stored.snapshots["workspace"], str(target / "workspace")),
        ("data", stored.snapshots["data"], str(target / "data")),
    ]
    assert all(v.bytes > 3 << 20 and v.files == 22 for v in outcome.volumes)
    assert [q.namespace for q in registry.asked] == [NAMESPACE]
    # progress was published on core NATS for each volume, ending at its total
    last = {p.volume: p for p in outcomes.progress if p.request_id == "r-two"}
    assert set(last) == {"workspace", "data"}
    assert all(p.bytes_done == p.bytes_total > 0 for p in last.values())
    # a restore only reads: every object of the repository is as it was
    assert repository_objects(stored.repo_dir) == before


async def test_one_volume_is_restored_into_the_directory_itself(
    stored: Stored, registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    target = tmp_path / "only-data"
    target.mkdir()  # an existing empty directory is a valid target
    await ask(js, request("r-one", target, volumes=("data",)))
    outcome = await outcomes.wait("r-one")
    assert isinstance(outcome, RestoreCompleted), outcome
    assert tree(target) == tree(stored.volumes["data"])
    assert [(v.name, v.location) for v in outcome.volumes] == [("data", str(target))]


async def test_a_volume_url_restores_just_that_volume(
    stored: Stored, registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    url = format_url(NAMESPACE, "exp-3mis2", "train-3mis2-a1b2", "k3x9q2mf", "workspace")
    registry.answers[url] = stored.resolved(url, names=("workspace",))
    target = tmp_path / "ws"
    await ask(js, request("r-url", target, url=url))
    outcome = await outcomes.wait("r-url")
    assert isinstance(outcome, RestoreCompleted), outcome
    assert tree(target) == tree(stored.volumes["workspace"])


async def test_a_request_delivered_again_publishes_the_same_outcome_without_restoring_again(
    stored: Stored, registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    target = tmp_path / "again"
    event = request("r-again", target)
    await ask(js, event)
    first = await outcomes.wait("r-again")
    assert isinstance(first, RestoreCompleted)
    marker = target / "workspace" / "written-after-the-restore"
    marker.write_text("the user works in the restored copy")
    # the same request once more, past the stream's de-duplication (as a redelivery would arrive)
    outcomes.completed.clear()
    await js.publish(
        subjects.RESTORE_REQUESTED,
        event.model_dump_json().encode(),
        headers={bus.MSG_ID: "redelivered-copy"},
    )
    again = await outcomes.wait("r-again")
    assert again == first  # same event id, same statistics: the stored outcome, not a second restore
    assert marker.read_text() == "the user works in the restored copy"
    assert len(registry.asked) == 1
    info = await settled(js)
    assert info.num_ack_pending == 0 and info.num_redelivered == 0
    # the stream keeps the outcome once: the re-publish carried the same Nats-Msg-Id
    stored_outcomes = await js.pull_subscribe(subjects.RESTORE_COMPLETED, stream=streams.RESTORES.name)
    messages = await stored_outcomes.fetch(10, timeout=1.0)
    assert [RestoreCompleted.decode(m.data).event_id for m in messages] == [first.event_id]


async def test_every_volume_of_the_version_is_restored_by_default_workspace_first(
    stored: Stored, registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    await ask(js, request("r-order", tmp_path / "t", volumes=("data", "workspace")))
    outcome = await outcomes.wait("r-order")
    assert isinstance(outcome, RestoreCompleted), outcome
    assert [v.name for v in outcome.volumes] == ["workspace", "data"]
    assert outcome.url == VERSION_URL


async def test_a_request_whose_earlier_attempt_was_cut_short_discards_that_attempt_and_restores(
    stored: Stored, registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    target = tmp_path / "t"
    event = request("r-crashed", target)
    # what a restorer killed mid-restore leaves: its claim on the target, and half of the files
    await KvOutcomes(lambda: js, ttl=3600).put(event.event_id, Record("claimed"))
    (target / "workspace" / "sub").mkdir(parents=True)
    (target / "workspace" / "big.bin").write_bytes(b"half")
    (target / "workspace" / "sub").chmod(0o500)
    await ask(js, event)
    outcome = await outcomes.wait("r-crashed")
    assert isinstance(outcome, RestoreCompleted), outcome
    for name, source in stored.volumes.items():
        assert tree(target / name) == tree(source), name


async def test_one_trace_covers_a_restore_from_request_to_completion(
    stored: Stored, registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    restorer.telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = restorer.telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("user asks for a restore") as root:
        await ask(js, request("r-traced", tmp_path / "t"))
    outcome = await outcomes.wait("r-traced")
    assert isinstance(outcome, RestoreCompleted), outcome
    await settled(js)  # acknowledged: the handler, and the publish of its outcome, are over
    trace_id = root.get_span_context().trace_id
    names = [s.name for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
    for expected in (
        f"{subjects.RESTORE_REQUESTED} publish",
        "rok.restore",
        "rok.restore.resolve",
        f"{subjects.registry_query('resolve')} request",
        "rok.store.restore",
        "rok.store.pack.download",
        f"{subjects.RESTORE_COMPLETED} publish",
    ):
        assert expected in names, (expected, names)
    assert names.count("rok.restore.volume") == 2


async def test_restores_are_measured_by_outcome(
    stored: Stored, registry: FakeRegistry, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    meter = RecordingMeter()
    restorer = Restorer(
        RegistryCatalog(lambda: nc, timeout=2), KvOutcomes(lambda: js, ttl=3600), Targets(), meter=meter
    )
    done = await restorer.handle(request("r-measured", tmp_path / "ok"))
    refused = await restorer.handle(request("r-refused", tmp_path / "no", volumes=("models",)))
    assert isinstance(done, RestoreCompleted) and isinstance(refused, RestoreFailed)
    assert [(name, attrs) for name, _, attrs in meter.records] == [
        ("rok.restore.duration", {"outcome": "completed"}),
        ("rok.restore.bytes", None),
        ("rok.restore.duration", {"outcome": "failed"}),
        ("rok.restore.failures", None),
    ]
    restored_bytes = sum(v.bytes for v in done.volumes)
    assert meter.records[1][1] == restored_bytes > 6 << 20
    assert all(name in {m.name for m in METRICS} for name, _, _ in meter.records)


class RecordingMeter:
    def __init__(self) -> None:
        self.records: list[tuple[str, float, dict[str, str] | None]] = []

    def add(self, name: str, value: float, attributes: dict[str, str] | None = None) -> None:
        self.records.append((name, value, attributes))


async def test_set_uid_bits_come_back_only_when_the_request_asks_for_them(
    stored: Stored, registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    from rokstore import open_repository, snapshot

    tool = stored.volumes["data"] / "sub" / "deeper" / "run.sh"
    tool.chmod(0o4755)
    async with await open_repository(stored.repo_url, cache_dir=tmp_path / "cache") as repo:
        again = (await snapshot(repo, stored.volumes["data"])).snapshot_id
    registry.answers[VERSION_URL] = Stored(
        stored.repo_url, stored.repo_dir, stored.volumes, {**stored.snapshots, "data": again}
    ).resolved()
    await ask(js, request("r-plain", tmp_path / "plain", volumes=("data",)))
    await ask(js, request("r-kept", tmp_path / "kept", volumes=("data",), keep_setuid=True))
    for request_id in ("r-plain", "r-kept"):
        assert isinstance(await outcomes.wait(request_id), RestoreCompleted)
    assert (tmp_path / "plain" / "sub" / "deeper" / "run.sh").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "kept" / "sub" / "deeper" / "run.sh").stat().st_mode & 0o7777 == 0o4755
