"""Messages just under the server's ``max_payload`` on every subject a service consumes, against the real
processes on a nats-server whose limit is 64 KiB: each consumer dead-letters its copy in a bounded letter, no
service loses its connection, a run then goes through as usual, and after a restart nothing is redelivered."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext
from rokcommon import bus, payloads, streams, subjects
from rokcommon.events import RestoreCompleted
from roktesting.nats import SMALL_MAX_PAYLOAD, small_payload_server
from roktesting.s3 import S3Server

from .conftest import make_system
from .system import NODE, PipelineRun, System, eventually

pytestmark = pytest.mark.slow

TOKEN = subjects.node_token(NODE)
# every subject a service consumes → the durable consumers that take it
CONSUMED = {
    subjects.for_node(subjects.RUN_STARTED, NODE): (f"snapshotter-{TOKEN}-runs", "registry-pipeline"),
    subjects.for_node(subjects.STEP_STARTED, NODE): (f"snapshotter-{TOKEN}", "registry-pipeline"),
    subjects.for_node(subjects.STEP_FINISHED, NODE): (f"snapshotter-{TOKEN}", "registry-pipeline"),
    subjects.RUN_FINISHED: ("registry-pipeline",),
    subjects.SNAPSHOT_COMPLETED: ("registry-snapshots",),
    subjects.SNAPSHOT_FAILED: ("registry-snapshots",),
    subjects.RESTORE_REQUESTED: ("restorer",),
}


@pytest.fixture
async def small_system(s3_server: S3Server, postgres_dsn: str, tmp_path: Path) -> AsyncIterator[System]:
    nats = small_payload_server(tmp_path / "nats")
    nats.start()
    system = make_system(tmp_path, nats, s3_server, f"rok-{secrets.token_hex(6)}", postgres_dsn)
    try:
        yield system
    finally:
        await system.close()
        nats.stop()


def poison(subject: str) -> tuple[bytes, dict[str, str]]:
    """A message 8 bytes under the limit, headers included, as a publisher that checks nothing could send."""
    headers = {bus.MSG_ID: f"poison-{subject}"}
    start = b'{"event_id": "poison-' + subject.encode() + b'", "run_name": "'
    return start + b"x" * (SMALL_MAX_PAYLOAD - 8 - payloads.message_size(start, headers)), headers


async def dead_letters(js: JetStreamContext) -> list[Any]:
    sub = await js.pull_subscribe(f"{subjects.DEAD_LETTER}.>", stream=streams.DLQ.name)
    found: list[Any] = []
    while True:
        try:
            found += await sub.fetch(50, timeout=1.0)
        except TimeoutError:
            return found


def volumes(root: Path) -> dict[str, Path]:
    paths = {"workspace": root / "workspace", "data": root / "data"}
    for name, path in paths.items():
        path.mkdir(parents=True)
        (path / "file.txt").write_text(f"{name}\n")
    return paths


async def test_a_message_just_under_max_payload_on_every_consumed_subject_wedges_no_service(
    small_system: System, tmp_path: Path
) -> None:
    system = small_system
    await system.start()
    sent: dict[str, tuple[int, int]] = {}  # subject → (stream sequence, size)
    for subject in CONSUMED:
        payload, headers = poison(subject)
        assert payloads.message_size(payload, headers) == SMALL_MAX_PAYLOAD - 8
        ack = await system.js.publish(subject, payload, headers=headers)
        sent[subject] = (ack.seq, len(payload))
    expected = {(subject, consumer) for subject, consumers in CONSUMED.items() for consumer in consumers}

    async def all_dead_lettered() -> bool:
        info = await system.js.stream_info(streams.DLQ.name)
        return info.state.messages >= len(expected)

    assert await eventually(all_dead_lettered, 30), "\n".join(s.tail(10) for s in system.services.values())
    letters = await dead_letters(system.js)
    assert {(m.headers[bus.DEAD_SUBJECT], m.headers[bus.DEAD_CONSUMER]) for m in letters} == expected
    assert len(letters) == len(expected)
    for letter in letters:
        sequence, size = sent[letter.headers[bus.DEAD_SUBJECT]]
        assert letter.headers[bus.DEAD_SEQUENCE] == str(sequence)
        assert letter.headers[bus.DEAD_SIZE] == str(size)
        assert letter.headers[bus.DEAD_TRUNCATED] == "true"
        assert len(letter.data) == bus.DEAD_PREFIX
        assert "invalid" in letter.headers[bus.DEAD_REASON].lower()
    for service in system.services.values():
        assert service.running, service.tail()
        assert not [line for line in service.lines() if "closed for good" in line.get("message", "")]

    # every service goes on: a run is recorded (snapshotter, registry) and its initial version restores (restorer)
    run = PipelineRun(system, volumes(tmp_path / "volumes"))
    initial = await run.begin()
    restored = await system.restore(initial.url, tmp_path / "restored")
    assert isinstance(restored, RestoreCompleted), restored

    # a restart redelivers nothing: each poison message was terminated, not left pending
    services = list(system.services.values())
    assert await asyncio.gather(*(s.stop() for s in services)) == [0] * len(services)
    await asyncio.gather(*(s.start() for s in services))
    step = await run.play_step("train", lambda: (run.volumes["data"] / "model.bin").write_bytes(b"model"))
    assert step.name == "train"
    info = await system.js.stream_info(streams.DLQ.name)
    assert info.state.messages == len(expected)
    for stream, durable in {(streams.PIPELINE.name, "registry-pipeline"), (streams.RESTORES.name, "restorer")}:
        consumer = await system.js.consumer_info(stream, durable)
        assert consumer.num_redelivered == 0 and consumer.num_ack_pending == 0
