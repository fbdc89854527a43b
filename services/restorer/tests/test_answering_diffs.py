"""The restorer answers ``rok.store.diff.v1``: two versions compared in its store, or the typed error why not."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client
from restorer_testkit import NAMESPACE, VERSION_URL, FakeRegistry, Stored
from rokcommon.diffs import request_diff
from rokcommon.errors import Forbidden, NotFound, TemporaryError
from rokcommon.service import Service
from rokcommon.urls import format_url
from rokstore import open_repository, snapshot

LATER_URL = format_url(NAMESPACE, "exp-3mis2", "train-3mis2-a1b2", "z9y8x7w6")


async def later_version(stored: Stored, registry: FakeRegistry, tmp_path: Path) -> None:
    """A second version whose workspace gained a file and lost one; its data volume is the same snapshot."""
    ws = stored.volumes["workspace"]
    (ws / "model.json").write_text("{}\n")
    (ws / "sub" / "small-3.txt").unlink()
    async with await open_repository(stored.repo_url, cache_dir=tmp_path / "cache") as repo:
        stored.snapshots["workspace"] = (await snapshot(repo, ws)).snapshot_id
    registry.answers[LATER_URL] = stored.resolved(LATER_URL)


async def test_two_versions_are_compared_volume_by_volume_in_the_store(
    restorer: Service, registry: FakeRegistry, stored: Stored, nc: Client, tmp_path: Path
) -> None:
    first = dict(stored.snapshots)
    await later_version(stored, registry, tmp_path)
    changes = await request_diff(nc, NAMESPACE, VERSION_URL, LATER_URL)
    workspace, data = changes
    assert (workspace.volume, workspace.a, workspace.b) == (
        "workspace",
        first["workspace"],
        stored.snapshots["workspace"],
    )
    assert workspace.added == ("model.json",)
    assert workspace.removed == ("sub/small-3.txt",)
    assert "sub" in workspace.changed
    assert (data.volume, data.unchanged, data.count) == ("data", True, 0)
    assert {(q.namespace, q.url) for q in registry.asked} == {(NAMESPACE, VERSION_URL), (NAMESPACE, LATER_URL)}


async def test_a_version_the_registry_does_not_know_is_not_found(
    restorer: Service, registry: FakeRegistry, nc: Client
) -> None:
    unknown = format_url(NAMESPACE, "exp-3mis2", "train-3mis2-a1b2", "00000000")
    with pytest.raises(NotFound, match="00000000"):
        await request_diff(nc, NAMESPACE, VERSION_URL, unknown)


async def test_a_version_of_another_namespace_is_refused(restorer: Service, registry: FakeRegistry, nc: Client) -> None:
    with pytest.raises(Forbidden, match="team-a"):
        await request_diff(nc, "team-b", VERSION_URL, VERSION_URL)


async def test_without_a_restorer_a_diff_says_who_should_answer(nc: Client) -> None:
    with pytest.raises(TemporaryError, match="rok-restorer"):
        await request_diff(nc, NAMESPACE, VERSION_URL, VERSION_URL, timeout=2)
