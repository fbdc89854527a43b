"""What users of restic and of other CLIs expect: a version, shell completion, the repository from the
environment, and a run found by its KFP run id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from .stack import Stack, rok

ROK_BIN = Path(sys.executable).parent


def test_rok_version_names_the_installed_version_of_every_part() -> None:
    result = rok("version", "--json")
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    assert shown["version"] == version("rokcli")
    assert shown["parts"]["rokstore"] == version("rokstore")
    assert shown["parts"]["rok-registry"] == version("rok-registry")
    assert set(shown["parts"]) >= {"rokcli", "rokcommon", "rokstore", "rok-snapshotter", "rok-restorer"}


def test_rok_dash_dash_version_prints_the_same_versions_as_rok_version() -> None:
    flag, command = rok("--version"), rok("version")
    assert flag.code == 0 and flag.out == command.out
    assert flag.out.startswith(f"rok {version('rokcli')}\n") and "rok-pipeline-watcher" in flag.out


def _complete(words: str, script: str) -> list[str]:
    """What bash, with ``rok completion bash`` sourced, offers for the command line ``words``."""
    program = (
        f'eval "$({script})"\n'
        f"COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=()\n"
        '_rok_completion rok; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{ROK_BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, timeout=60, check=True)
    return done.stdout.split()


def test_bash_completes_commands_and_subcommands_from_rok_completion_bash() -> None:
    assert _complete("rok res", "rok completion bash") == ["restore"]
    assert set(_complete("rok snapshot ''", "rok completion bash")) == {"create", "diff", "ls", "restore"}
    assert "--to" in _complete("rok restore --", "rok completion bash")


@pytest.mark.parametrize(("shell", "marker"), [("zsh", "#compdef rok"), ("fish", "--command rok")])
def test_zsh_and_fish_scripts_call_back_rok_which_answers_with_the_matching_commands(shell: str, marker: str) -> None:
    script = rok("completion", shell)
    assert script.code == 0, script.err
    assert marker in script.out and f"_ROK_COMPLETE={shell}_complete" in script.out
    # what the script runs on <TAB>: rok itself, with the shell's words in the environment
    env = {**os.environ, "_ROK_COMPLETE": f"{shell}_complete", "COMP_WORDS": "rok res", "COMP_CWORD": "res"}
    if shell == "zsh":
        env["COMP_CWORD"] = "1"
    answer = subprocess.run([str(ROK_BIN / "rok")], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert "restore" in answer.stdout and "show" not in answer.stdout


def test_rok_repository_is_the_default_repository_of_rok_snapshot_and_rok_repo(tmp_path: Path, monkeypatch) -> None:
    repo = (tmp_path / "repo").as_uri()
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume" / "a.txt").write_text("hello")
    monkeypatch.setenv("ROK_REPOSITORY", repo)
    assert rok("repo", "init").code == 0
    created = rok("snapshot", "create", str(tmp_path / "volume"), "--json")
    assert created.code == 0, created.err
    listed = json.loads(rok("snapshot", "ls", "--json").out)
    assert [s["id"] for s in listed] == [json.loads(created.out)["snapshot_id"]]
    assert (tmp_path / "repo").is_dir()
    # --repo still wins over the environment
    other = (tmp_path / "other").as_uri()
    assert rok("repo", "init", "--repo", other).code == 0
    assert json.loads(rok("snapshot", "ls", "--repo", other, "--json").out) == []


def test_without_repo_or_rok_repository_the_error_names_both(monkeypatch) -> None:
    monkeypatch.delenv("ROK_REPOSITORY", raising=False)
    result = rok("snapshot", "ls")
    assert result.code == 2
    assert "--repo" in result.err and "ROK_REPOSITORY" in result.err


def test_ls_of_a_kfp_run_id_lists_that_runs_versions(stack: Stack) -> None:
    result = stack.rok("ls", stack.run_id, "--json")
    assert result.code == 0, result.err
    versions = json.loads(result.out)
    assert {v["url"] for v in versions} == {c.url for c in stack.committed.values()}
    assert {v["run_id"] for v in versions} == {stack.run_id}
    table = stack.rok("ls", stack.run_id)
    assert stack.committed[("train", "after")].url in table.out


def test_ls_of_a_part_of_a_run_id_is_not_found_and_says_what_to_list(stack: Stack) -> None:
    result = stack.rok("ls", stack.run_id[:-2])
    assert result.code == 4
    assert stack.run_id[:-2] in result.err and "rok ls" in result.err
