"""The walk's second thread scans ahead the directories likely the cached ones; the walk checks and uses each scan
as if it had made it: the same snapshot as a walk alone, a directory swapped before its scan refused, and a scan
that fails for a reason of its own made again by the walk."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rokstore import Repository, restore, snapshot
from rokstore.archiver import walker
from rokstore.archiver.known import KnownFiles

BELOW_ROOT = 4 + 4 * 3 + 4 * 3  # the directories of volume_of under its root


def settle() -> None:
    time.sleep(0.06)  # past the racy window, as in conftest.settle


def volume_of(root: Path) -> Path:
    """Directories three deep, a few files in each: enough for both threads to have work."""
    for top in range(4):
        for mid in range(3):
            d = root / f"top{top}" / f"mid{mid}" / "leaf"
            d.mkdir(parents=True)
            for n in range(3):
                (d / f"f{n}.txt").write_text(f"{top}/{mid}/{n}\n")
                (d.parent / f"g{n}.txt").write_text(f"{top}/{mid}/g{n}\n")
    settle()
    return root


class Eager(walker._ScanAhead):
    """The scan-ahead without its thread: what is offered is scanned at once, on the walk's thread, and what is
    below it too, so every directory but the root takes the early path. ``before`` runs just before a
    directory's scan (by its relative path)."""

    def __init__(self, known: KnownFiles, before: Callable[[str], None]) -> None:
        self._known = known
        self._done: dict[str, object] = {}
        self._changed = threading.Condition()
        self.before = before
        self.scanned: list[str] = []

    def offer(self, dirs: list[tuple[str, str]]) -> None:
        for path, rel in dirs:
            if self._known.may_be_same(rel) and rel not in self._done:
                self._done[rel] = None
                self.before(rel)
                self.scanned.append(rel)
                self._scan(path, rel)

    def stop(self) -> None:
        pass


def eager(monkeypatch: pytest.MonkeyPatch, before: Callable[[str], None] = lambda rel: None) -> list[Eager]:
    """Walks from now on scan ahead eagerly; the list holds each walk's scan-ahead."""
    made: list[Eager] = []

    def make(known: KnownFiles) -> Eager:
        made.append(Eager(known, before))
        return made[-1]

    monkeypatch.setattr(walker, "_ScanAhead", make)
    return made


async def tree_of(repo: Repository, snapshot_id: str) -> bytes:
    return (await repo.load_record(snapshot_id)).tree


async def test_scans_made_ahead_give_the_snapshot_a_walk_alone_gives(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same_tree: Callable[[Path, Path], None]
) -> None:
    volume = volume_of(tmp_path / "volume")
    first = await snapshot(repo, volume)
    made = eager(monkeypatch)
    opened: list[str] = []
    open_dir = walker.Walker._open

    def counted(self: walker.Walker, path: str, rel: str, listed: object) -> int | None:
        opened.append(rel)
        return open_dir(self, path, rel, listed)  # type: ignore[arg-type]

    monkeypatch.setattr(walker.Walker, "_open", counted)
    again = await snapshot(repo, volume)
    assert len(made[-1].scanned) == BELOW_ROOT
    assert opened == [""]  # the walk opened the root only: every other directory's scan was taken as made
    assert again.files_opened == 0 and not again.incomplete
    assert await tree_of(repo, again.snapshot_id) == await tree_of(repo, first.snapshot_id)

    (volume / "top2" / "mid1" / "leaf" / "f0.txt").write_text("changed\n")
    (volume / "top0" / "new").mkdir()
    settle()
    ahead = await snapshot(repo, volume)
    assert "top2/mid1/leaf" in made[-1].scanned  # changed: scanned ahead, found not same, listed by the walk
    assert ahead.files_opened == 1 and not ahead.incomplete
    await restore(repo, ahead.snapshot_id, tmp_path / "restored")
    same_tree(volume, tmp_path / "restored")


async def test_a_directory_swapped_before_it_is_scanned_ahead_is_refused_as_by_the_walk(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = volume_of(tmp_path / "volume")
    await snapshot(repo, volume)
    swapped = volume / "top1" / "mid2"

    def swap(rel: str) -> None:
        if rel == "top1/mid2":  # listed by its parent's scan already: another directory takes its name
            os.rename(swapped, volume / "was-mid2")
            swapped.mkdir()
            (swapped / "planted.txt").write_text("not what the parent's listing saw\n")

    eager(monkeypatch, swap)
    stats = await snapshot(repo, volume)
    assert stats.incomplete
    assert any(error.startswith("top1/mid2") for error in stats.errors), stats.errors
    await restore(repo, stats.snapshot_id, tmp_path / "restored")
    assert not list((tmp_path / "restored").rglob("planted.txt"))
    assert (tmp_path / "restored" / "top1" / "mid1" / "leaf" / "f2.txt").read_text() == "1/1/2\n"


async def test_a_scan_ahead_that_fails_for_a_reason_of_its_own_is_made_again_by_the_walk(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = volume_of(tmp_path / "volume")
    first = await snapshot(repo, volume)
    made = eager(monkeypatch)
    scan_early = walker._scan_early
    failed: list[str] = []

    def failing(path: str) -> walker.Early:
        if path.endswith("top3/mid0"):
            failed.append(path)
            raise MemoryError("no room for the scan")
        return scan_early(path)

    monkeypatch.setattr(walker, "_scan_early", failing)
    again = await snapshot(repo, volume)
    assert failed and "top3/mid0" in made[-1].scanned
    assert not again.incomplete and again.files_opened == 0
    assert await tree_of(repo, again.snapshot_id) == await tree_of(repo, first.snapshot_id)


async def test_the_scan_ahead_thread_ends_with_the_walk(repo: Repository, tmp_path: Path) -> None:
    volume = volume_of(tmp_path / "volume")
    first = await snapshot(repo, volume)
    for _ in range(3):
        again = await snapshot(repo, volume)
        assert again.files_opened == 0
        assert await tree_of(repo, again.snapshot_id) == await tree_of(repo, first.snapshot_id)
        assert not [t for t in threading.enumerate() if t.name == "rok-scan-ahead"]
