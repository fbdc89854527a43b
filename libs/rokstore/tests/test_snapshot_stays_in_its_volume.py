"""A snapshot reads nothing outside its directory: symlinks are stored as links, never followed, and a directory
swapped for a symlink while the snapshot walks is not read through."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from rokstore import Repository, init_repository, restore, snapshot
from rokstore.archiver.reader import FileReader
from rokstore.archiver.walker import Walker
from rokstore.repository.manifest import Entry

SECRET = b"the key to everything\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the volume, holding what the volume must not leak."""
    secret = tmp_path / "secret-outside"
    (secret / "b").mkdir(parents=True)
    (secret / "key").write_bytes(SECRET)
    (secret / "b" / "key").write_bytes(SECRET)
    return secret


def files_in(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


async def test_symlinks_out_of_the_volume_are_stored_as_links_and_nothing_behind_them_is_read(
    file_repo_url: str, outside: Path, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "mine.txt").write_text("mine\n")
    (volume / "to-dir").symlink_to(outside)
    (volume / "to-file").symlink_to(outside / "key")
    (volume / "up").symlink_to("../secret-outside")
    async with await init_repository(file_repo_url) as repo:
        stats = await snapshot(repo, volume)
        await restore(repo, stats.snapshot_id, tmp_path / "out")
    out = tmp_path / "out"
    assert (stats.files, stats.bytes_scanned) == (1, len("mine\n"))
    assert {name: os.readlink(out / name) for name in ("to-dir", "to-file", "up")} == {
        "to-dir": str(outside),
        "to-file": str(outside / "key"),
        "up": "../secret-outside",
    }
    assert all(stat.S_ISLNK(os.lstat(out / name).st_mode) for name in ("to-dir", "to-file", "up"))
    assert files_in(out) == {"mine.txt": b"mine\n"}


async def test_a_directory_swapped_for_a_symlink_during_the_walk_is_not_read_through(
    repo: Repository, outside: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = tmp_path / "volume"
    (volume / "a" / "b").mkdir(parents=True)
    (volume / "a" / "b" / "key").write_bytes(b"ours\n")
    listed = Walker._list_dir

    def list_then_swap(self: Walker, path: str, rel: str, subdirs: list[tuple[str, str]]) -> object:
        found = listed(self, path, rel, subdirs)
        if rel == "a":  # a step's code, racing the snapshot: a/ becomes a link out once it has been listed
            os.rename(volume / "a", volume / "a-was")
            (volume / "a").symlink_to(outside)
        return found

    monkeypatch.setattr(Walker, "_list_dir", list_then_swap)
    stats = await snapshot(repo, volume)
    await restore(repo, stats.snapshot_id, tmp_path / "out")
    assert SECRET not in files_in(tmp_path / "out").values()
    assert stats.incomplete and any(e.startswith("a/b") for e in stats.errors)


async def test_a_file_whose_directory_is_swapped_for_a_symlink_before_it_is_read_is_not_read_through(
    repo: Repository, outside: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = tmp_path / "volume"
    (volume / "b").mkdir(parents=True)
    (volume / "b" / "key").write_bytes(b"ours, and as long as the secret\n")
    read = FileReader.read

    def swap_then_read(self: FileReader, path: str, rel: str, entry: Entry, st: os.stat_result) -> None:
        if rel == "b/key":  # listed, queued, and now b/ leads out of the volume
            os.rename(volume / "b", volume / "b-was")
            (volume / "b").symlink_to(outside / "b")
        read(self, path, rel, entry, st)

    monkeypatch.setattr(FileReader, "read", swap_then_read)
    stats = await snapshot(repo, volume)
    await restore(repo, stats.snapshot_id, tmp_path / "out")
    assert SECRET not in files_in(tmp_path / "out").values()
    assert "b/key: replaced while the snapshot read it; not followed" in stats.errors
