"""Which volumes a request restores, and the reason when it cannot: plain domain code, no servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from restorer_testkit import VERSION_URL, Stored
from rok_restorer.restoring import Refused, choose_volumes
from rokcommon.registry_contract import FailedVolume


@pytest.fixture
def version(tmp_path: Path) -> Stored:
    volumes = {"workspace": tmp_path / "w", "data": tmp_path / "d", "scratch": tmp_path / "s"}
    for path in volumes.values():
        path.mkdir()
    return Stored("file:///repo", tmp_path, volumes, {"workspace": "a" * 64, "data": "b" * 64, "scratch": "c" * 64})


def test_every_volume_is_chosen_by_default_workspace_first(version: Stored) -> None:
    chosen = choose_volumes(version.resolved(), ())
    assert [(v.name, v.snapshot_id, v.repository) for v in chosen] == [
        ("workspace", "a" * 64, "file:///repo"),
        ("data", "b" * 64, "file:///repo"),
        ("scratch", "c" * 64, "file:///repo"),
    ]


def test_named_volumes_keep_the_versions_order_and_repeat_once(version: Stored) -> None:
    chosen = choose_volumes(version.resolved(), ("scratch", "workspace", "scratch"))
    assert [v.name for v in chosen] == ["workspace", "scratch"]


def test_a_volume_that_failed_to_snapshot_is_refused_with_the_snapshot_failure(version: Stored) -> None:
    resolved = version.resolved(names=("workspace", "data"))
    failed = resolved.version.model_copy(
        update={
            "failed": (FailedVolume(volume="scratch", reason="volume path /x does not exist"),),
            "status": "partial",
        }
    )
    with pytest.raises(Refused) as refused:
        choose_volumes(resolved.model_copy(update={"version": failed}), ("scratch",))
    assert str(refused.value) == (
        f"volume 'scratch' of {VERSION_URL} was not snapshotted (volume path /x does not exist); it cannot be restored"
    )


def test_a_volume_not_recorded_yet_is_refused_until_the_version_is_committed(version: Stored) -> None:
    resolved = version.resolved(names=("workspace",))
    pending = resolved.model_copy(update={"version": resolved.version.model_copy(update={"status": "pending"})})
    with pytest.raises(Refused, match=r"'data' of .* is not recorded yet"):
        choose_volumes(pending, ("data",))


def test_an_unknown_volume_is_refused_naming_those_there_are(version: Stored) -> None:
    with pytest.raises(Refused) as refused:
        choose_volumes(version.resolved(), ("models",))
    assert str(refused.value) == f"{VERSION_URL} has no volume 'models'; it holds: workspace, data, scratch"
