"""A local run's clone: by reflink where the filesystem shares extents, else copied; removed whole afterwards."""

from __future__ import annotations

import os
from pathlib import Path

from rok_pipeline_watcher.runner.clones import clone_tree, reflink, reflinks_work, remove_clone


def _notebook(root: Path) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "model.bin").write_bytes(os.urandom(200_000))
    (root / "src" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "src" / "run.sh").chmod(0o750)
    (root / "src" / "latest").symlink_to("pkg/model.bin")
    os.utime(root / "src" / "pkg" / "model.bin", (1_700_000_000, 1_700_000_000))
    return root / "src"


def test_a_clone_holds_the_same_files_modes_times_and_links_reflinked_where_the_filesystem_can(tmp_path):
    source = _notebook(tmp_path)
    can = reflinks_work([source], tmp_path / "runs")

    stats = clone_tree(source, tmp_path / "runs" / "workspace")

    clone = tmp_path / "runs" / "workspace"
    assert (clone / "pkg" / "model.bin").read_bytes() == (source / "pkg" / "model.bin").read_bytes()
    assert (clone / "run.sh").stat().st_mode & 0o777 == 0o750
    assert (clone / "pkg" / "model.bin").stat().st_mtime == 1_700_000_000
    assert os.readlink(clone / "latest") == "pkg/model.bin"
    assert (stats.files, stats.bytes) == (2, 200_000 + len("#!/bin/sh\necho hi\n"))
    assert stats.reflinked == (2 if can else 0)  # ext4 and tmpfs copy; btrfs and XFS share the extents
    assert list((tmp_path / "runs").iterdir()) == [clone]  # the probe left nothing behind
    # a step writing into the clone never reaches the notebook
    (clone / "pkg" / "model.bin").write_bytes(b"retrained")
    assert len((source / "pkg" / "model.bin").read_bytes()) == 200_000


def test_a_file_that_cannot_be_reflinked_leaves_nothing_behind(tmp_path):
    (tmp_path / "a").write_bytes(b"data")
    shared = reflink(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").exists() == shared


def test_a_clone_is_removed_whole_read_only_directories_included(tmp_path):
    clone = tmp_path / "runs" / "run-1"
    clone_tree(_notebook(tmp_path), clone / "workspace")
    (clone / "workspace" / "pkg").chmod(0o500)
    (clone / "workspace").chmod(0o555)

    remove_clone(clone)

    assert not clone.exists()
    assert (tmp_path / "src" / "pkg" / "model.bin").exists()
