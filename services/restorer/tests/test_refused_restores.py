"""Requests that cannot succeed end in a RestoreFailed whose reason a user understands — once, never retried —
and leave what they found as it was; transient trouble is retried until it passes."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from restorer_testkit import NAMESPACE, VERSION_URL, FakeRegistry, Outcomes, Stored, ask, request, settled, tree
from rok_restorer.main import build
from rok_restorer.settings import RestorerSettings
from rokcommon import bus, streams, subjects
from rokcommon.events import NotebookTarget, PvcTarget, RestoreCompleted, RestoreFailed
from rokcommon.service import Service
from rokcommon.urls import format_url
from roktesting.nats import running


async def failed(outcomes: Outcomes, request_id: str) -> RestoreFailed:
    outcome = await outcomes.wait(request_id)
    assert isinstance(outcome, RestoreFailed), outcome
    return outcome


async def assert_settled_without_retry(js: JetStreamContext) -> None:
    info = await settled(js)
    assert info.num_ack_pending == 0 and info.num_redelivered == 0 and info.num_pending == 0
    dlq = await js.stream_info(streams.DLQ.name)
    assert dlq.state.messages == 0


async def test_an_unknown_url_is_refused_with_the_url_in_the_reason(
    registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    url = format_url(NAMESPACE, "exp-3mis2", "train-3mis2-a1b2", "zzzz9999")
    await ask(js, request("r-unknown", tmp_path / "t", url=url))
    outcome = await failed(outcomes, "r-unknown")
    assert outcome.reason.startswith(f"unknown URL {url}")
    assert not (tmp_path / "t").exists()
    await assert_settled_without_retry(js)


async def test_another_namespaces_version_is_refused(
    registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    await ask(js, request("r-foreign", tmp_path / "t", namespace="team-b"))
    outcome = await failed(outcomes, "r-foreign")
    assert outcome.reason == (
        f"restore r-foreign refused: {VERSION_URL} is in namespace 'team-a', not in 'team-b' as the request says"
    )
    assert registry.asked == []  # refused before anything was resolved
    letters = await js.pull_subscribe(f"{subjects.DEAD_LETTER}.>", stream=streams.DLQ.name)
    [letter] = await letters.fetch(1, timeout=10)
    assert letter.headers[bus.DEAD_REASON] == outcome.reason
    assert not (tmp_path / "t").exists()


async def test_a_malformed_url_is_refused_before_asking_the_registry(
    registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    await ask(js, request("r-bad-url", tmp_path / "t", url="http://example.com/x"))
    outcome = await failed(outcomes, "r-bad-url")
    assert outcome.reason.startswith("invalid URL http://example.com/x")
    assert "rok://" in outcome.reason
    assert registry.asked == []


async def test_an_unknown_volume_is_refused_naming_the_volumes_the_version_holds(
    registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    await ask(js, request("r-novol", tmp_path / "t", volumes=("data", "scratch")))
    outcome = await failed(outcomes, "r-novol")
    assert outcome.reason == f"{VERSION_URL} has no volume 'scratch'; it holds: workspace, data"
    assert not (tmp_path / "t").exists()
    await assert_settled_without_retry(js)


async def test_a_target_that_is_not_empty_is_refused_and_left_untouched(
    registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    await ask(js, request("r-busy", target))
    outcome = await failed(outcomes, "r-busy")
    assert outcome.reason == f"restore target {target} is not empty; give an empty or new directory"
    assert tree(target) == {"notes.txt": tree(target)["notes.txt"]}
    assert (target / "notes.txt").read_text() == "mine"
    await assert_settled_without_retry(js)


async def test_corrupted_data_is_refused_and_the_partial_restore_removed(
    stored: Stored, registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    packs = sorted((stored.repo_dir / "packs").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    pack = packs[-1]
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    target = tmp_path / "t"
    await ask(js, request("r-corrupt", target))
    outcome = await failed(outcomes, "r-corrupt")
    assert "is corrupted" in outcome.reason and "does not match its BLAKE3 id" in outcome.reason
    assert list(target.iterdir()) == []  # nothing half-restored is left behind
    await assert_settled_without_retry(js)


@pytest.mark.parametrize(
    ("target", "what"),
    [
        (PvcTarget(namespace=NAMESPACE, name="restored-data"), "a new PVC (team-a/restored-data)"),
        (NotebookTarget(namespace=NAMESPACE, name="restored-nb"), "a new notebook server (team-a/restored-nb)"),
    ],
    ids=["pvc", "notebook"],
)
async def test_a_kubernetes_target_without_the_kubernetes_side_is_refused_clearly(
    registry: FakeRegistry,
    restorer: Service,
    outcomes: Outcomes,
    js: JetStreamContext,
    target: PvcTarget | NotebookTarget,
    what: str,
) -> None:
    await ask(js, request("r-kube", target))
    outcome = await failed(outcomes, "r-kube")
    assert outcome.reason.startswith(f"restoring into {what} needs the restorer's Kubernetes side")
    await assert_settled_without_retry(js)


async def test_a_registry_that_does_not_answer_in_time_is_asked_again(
    stored: Stored, settings: RestorerSettings, nc: Client, js: JetStreamContext, outcomes: Outcomes, tmp_path: Path
) -> None:
    fake = FakeRegistry({VERSION_URL: stored.resolved()})
    queries: list[Msg] = []

    async def slow_at_first(msg: Msg) -> None:
        queries.append(msg)
        if len(queries) > 1:  # the first question goes unanswered, as from a registry that is restarting
            await fake.on_resolve(msg)

    sub = await nc.subscribe(subjects.registry_query("resolve"), cb=slow_at_first)
    async with running(build(settings)):
        await ask(js, request("r-later", tmp_path / "t"))
        outcome = await outcomes.wait("r-later")
    await sub.unsubscribe()
    assert isinstance(outcome, RestoreCompleted), outcome
    assert len(queries) == 2
    assert tree(tmp_path / "t" / "data") == tree(stored.volumes["data"])
    assert tree(tmp_path / "t" / "workspace") == tree(stored.volumes["workspace"])


async def test_a_registry_that_never_answers_ends_in_a_failure_on_the_last_attempt(
    settings: RestorerSettings, js: JetStreamContext, outcomes: Outcomes, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"max_deliver": 2})
    service = build(settings)  # no registry at all
    async with running(service):
        await ask(js, request("r-never", tmp_path / "t"))
        outcome = await outcomes.wait("r-never", timeout=20)
    assert isinstance(outcome, RestoreFailed), outcome
    assert "could not finish after several attempts" in outcome.reason
    assert "no registry answers" in outcome.reason
    info = await settled(js)
    assert info.num_ack_pending == 0 and info.delivered.consumer_seq == settings.max_deliver


async def test_a_directory_outside_the_restore_roots_is_refused_even_through_a_symlink(
    registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext, tmp_path: Path
) -> None:
    (tmp_path / "escape").symlink_to("/")  # inside tmp (a root by default), pointing out of it
    await ask(js, request("r-escape", tmp_path / "escape" / "etc" / "rok-restored"))
    outcome = await failed(outcomes, "r-escape")
    assert outcome.reason.startswith("restore r-escape refused: restore target ")
    assert "is outside the directories restores may write" in outcome.reason
    assert registry.asked == []
    letters = await js.pull_subscribe(f"{subjects.DEAD_LETTER}.>", stream=streams.DLQ.name)
    [letter] = await letters.fetch(1, timeout=10)
    assert letter.headers[bus.DEAD_REASON] == outcome.reason
    assert not Path("/etc/rok-restored").exists()


async def test_device_files_and_set_uid_bits_are_never_restored_into_a_cluster_volume(
    registry: FakeRegistry, restorer: Service, outcomes: Outcomes, js: JetStreamContext
) -> None:
    await ask(js, request("r-setuid", PvcTarget(namespace=NAMESPACE, name="restored"), keep_setuid=True))
    outcome = await failed(outcomes, "r-setuid")
    assert outcome.reason.startswith("device files and set-uid/set-gid bits are restored only into a directory")
    assert registry.asked == []  # refused before anything was resolved
    await assert_settled_without_retry(js)
