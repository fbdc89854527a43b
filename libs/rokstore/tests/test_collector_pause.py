"""The cyclic collector is off while any snapshot or restore runs, and as it was once the last one ends."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rokstore import Repository, restore, snapshot
from rokstore.archiver.reader import FileReader
from rokstore.memory import collector_paused
from rokstore.restorer import TreeRestorer


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_overlapping_pauses_end_with_the_last_and_an_off_collector_stays_off(collector_on: None) -> None:
    first_inside, second_done = threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with collector_paused():
            first_inside.set()
            second_done.wait(5)
            seen.append(gc.isenabled())  # the second block ended, this one still runs

    thread = threading.Thread(target=first)
    thread.start()
    first_inside.wait(5)
    with collector_paused():
        assert not gc.isenabled()
    second_done.set()
    thread.join(5)
    assert seen == [False]
    assert gc.isenabled()

    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()  # it was off before: left off


async def test_a_snapshot_and_a_restore_run_with_the_collector_paused(
    repo: Repository, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector_on: None
) -> None:
    states: list[bool] = []  # the collector's state at each file read and each pack's chunks written

    def watched(cls: type, name: str) -> None:
        real = getattr(cls, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            states.append(gc.isenabled())
            return real(*args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    watched(FileReader, "read")
    watched(TreeRestorer, "_write_blobs")
    stats = await snapshot(repo, source)
    assert states and not any(states)
    assert gc.isenabled()

    states.clear()
    await restore(repo, stats.snapshot_id, tmp_path / "out")
    assert states and not any(states)
    assert gc.isenabled()
