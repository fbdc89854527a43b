"""``rok ls URL --path``, ``rok cat`` and ``rok mount`` of a whole run, against the services ``rok up`` started: what
they show is what the volumes held when each version was taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rokcli.mount import is_mounted

from .stack import Stack, tree

ROK = str(Path(sys.executable).with_name("rok"))


def _env(stack: Stack) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ROK_")}, **stack.env}


def test_ls_of_a_version_lists_its_volumes_then_a_directory_inside_one(stack: Stack) -> None:
    url = stack.committed[("train", "after")].url
    volumes = stack.rok("ls", url, "--json")
    assert volumes.code == 0, volumes.err
    assert [e["path"] for e in json.loads(volumes.out)["entries"]] == ["workspace", "data"]
    inside = stack.rok("ls", url, "--path", "workspace/lib", "--json")
    assert inside.code == 0, inside.err
    entries = json.loads(inside.out)["entries"]
    assert [(e["path"], e["kind"]) for e in entries] == [("workspace/lib/tinyfit", "dir")]
    table = stack.rok("ls", url, "--path", "/workspace/")
    assert table.code == 0 and "model.json" in table.out and "notes.txt" in table.out
    missing = stack.rok("ls", url, "--path", "workspace/nothing-here")
    assert missing.code == 4 and "nothing-here" in missing.err


def test_cat_prints_a_file_of_a_version_byte_for_byte(stack: Stack) -> None:
    before, after = stack.committed[("train", "before")].url, stack.committed[("train", "after")].url
    done = subprocess.run([ROK, "cat", after, "workspace/model.json"], env=_env(stack), capture_output=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == stack.held[("train", "after")]["workspace"]["model.json"]
    absent = stack.rok("cat", before, "workspace/model.json")  # written by the train step: not there before it
    assert absent.code == 4 and "model.json" in absent.err


def test_a_mounted_run_has_a_directory_per_version_holding_what_each_volume_held(stack: Stack, tmp_path: Path) -> None:
    run_url = stack.committed[("initial", "initial")].url.split("?")[0]
    mnt = tmp_path / "run"
    mnt.mkdir()
    process = subprocess.Popen([ROK, "mount", run_url, str(mnt)], env=_env(stack), stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("mounted"), line + process.stderr.read()
        expected = {"initial"} | {
            f"{step}-{phase}" for step in ("install", "prepare", "train") for phase in ("before", "after")
        }
        assert set(os.listdir(mnt)) == expected
        for (step, phase), volumes in stack.held.items():
            name = "initial" if step == "initial" else f"{step}-{phase}"
            for volume, held in volumes.items():
                assert tree(mnt / name / volume) == held, (name, volume)
    finally:
        umount = subprocess.run([ROK, "umount", str(mnt)], env=_env(stack), capture_output=True, text=True)
        assert umount.returncode == 0, umount.stderr
        assert process.wait(timeout=30) == 0
    assert not is_mounted(mnt)
