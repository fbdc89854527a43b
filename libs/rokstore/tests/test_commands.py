"""The command line: the exact forms the issue lists, one-line JSON, one-line errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROK = [sys.executable, "-c", "from rokcli import main; main()"]


def rok(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ROK, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_snapshot_lifecycle_on_the_command_line(repo_url: str, source: Path, tmp_path: Path, same_tree) -> None:
    assert rok("repo", "init", "--repo", repo_url).returncode == 0
    created = rok(
        "snapshot", "create", str(source), "--repo", repo_url, "--tag", "step=train", "--tag", "run=r1", "--json"
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("\n") == 1
    stats = json.loads(created.stdout)
    for key in ("snapshot_id", "files", "bytes_scanned", "bytes_read", "bytes_new", "bytes_uploaded", "seconds"):
        assert key in stats
    (source / "added.txt").write_text("more")
    second = json.loads(rok("snapshot", "create", str(source), "--repo", repo_url, "--json").stdout)

    listed = rok("snapshot", "ls", "--repo", repo_url, "--json")
    infos = json.loads(listed.stdout)
    assert [i["id"] for i in infos] == [stats["snapshot_id"], second["snapshot_id"]]
    assert infos[0]["tags"] == {"step": "train", "run": "r1"}

    diff = json.loads(
        rok(
            "snapshot", "diff", stats["snapshot_id"][:8], second["snapshot_id"][:10], "--repo", repo_url, "--json"
        ).stdout
    )
    assert diff["added"] == ["added.txt"] and diff["removed"] == []

    restored = rok(
        "snapshot", "restore", second["snapshot_id"][:8], "--repo", repo_url, "--to", str(tmp_path / "out"), "--json"
    )
    assert restored.returncode == 0, restored.stderr
    out = json.loads(restored.stdout)
    assert out["files"] == stats["files"] + 1 and "bytes" in out and "seconds" in out
    same_tree(source, tmp_path / "out")

    check = rok("repo", "check", "--repo", repo_url, "--read-data", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["ok"] is True
    gc = rok("repo", "gc", "--repo", repo_url, "--dry-run", "--json")
    assert gc.returncode == 0 and json.loads(gc.stdout)["dry_run"] is True


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr


def test_missing_repository_is_one_line_error(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'nothing'}"
    _one_line_error(rok("snapshot", "ls", "--repo", url), "no rok repository", "rok repo init")


def test_unknown_snapshot_is_one_line_error(repo_url: str) -> None:
    rok("repo", "init", "--repo", repo_url)
    _one_line_error(rok("snapshot", "restore", "0123456789ab", "--repo", repo_url, "--to", "/tmp/x"), "no snapshot")


def test_init_twice_is_one_line_error(repo_url: str) -> None:
    assert rok("repo", "init", "--repo", repo_url).returncode == 0
    _one_line_error(rok("repo", "init", "--repo", repo_url), "already exists")


def test_wrong_credentials_are_one_line_error(s3_repo_url: str) -> None:
    result = rok("snapshot", "ls", "--repo", s3_repo_url, env={"AWS_SECRET_ACCESS_KEY": "wrong"})
    _one_line_error(result, "rejected the credentials", "AWS_SECRET_ACCESS_KEY")


def test_unreachable_store_is_one_line_temporary_error(s3_repo_url: str) -> None:
    result = rok("snapshot", "ls", "--repo", s3_repo_url, env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    _one_line_error(result, "cannot reach the object store")


def test_corrupt_data_in_restore_is_one_line_error(file_repo_url: str, source: Path, tmp_path: Path) -> None:
    rok("repo", "init", "--repo", file_repo_url)
    sid = json.loads(rok("snapshot", "create", str(source), "--repo", file_repo_url, "--json").stdout)["snapshot_id"]
    repo = Path(file_repo_url.removeprefix("file://"))
    for pack in (repo / "packs").rglob("*"):
        if pack.is_file():
            data = bytearray(pack.read_bytes())
            data[10] ^= 1
            pack.write_bytes(bytes(data))
    _one_line_error(rok("snapshot", "restore", sid, "--repo", file_repo_url, "--to", str(tmp_path / "out")), "BLAKE3")
    check = rok("repo", "check", "--repo", file_repo_url, "--read-data")
    assert check.returncode != 0
    assert sid[:12] in check.stdout


def test_unknown_format_version_is_a_clear_error(file_repo_url: str) -> None:
    rok("repo", "init", "--repo", file_repo_url)
    config = Path(file_repo_url.removeprefix("file://")) / "config"
    doc = json.loads(config.read_text())
    doc["version"] = 99
    config.write_text(json.dumps(doc))
    _one_line_error(rok("snapshot", "ls", "--repo", file_repo_url), "format version 99", "upgrade rok")


@pytest.mark.parametrize("bad", ["ftp://host/x", "file://relative/path", "s3:///no-bucket"])
def test_bad_repository_url_is_one_line_error(bad: str) -> None:
    _one_line_error(rok("repo", "init", "--repo", bad), bad)
