"""rok ls / show / restore / diff against a running system with one recorded three-step run."""

from __future__ import annotations

import json
from pathlib import Path

from .stack import NAMESPACE, Stack, tree


def _versions(stack: Stack) -> list[dict]:
    url = stack.committed[("initial", "initial")].url
    result = stack.rok("ls", url.split("?")[0], "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_ls_lists_the_bucket_then_the_run_then_every_version_with_its_url(stack: Stack) -> None:
    buckets = json.loads(stack.rok("ls", "--json").out)
    # the stack's bucket, beside those that other tests of the session add to the same stack
    (bucket,) = [b["name"] for b in buckets if b["experiment"] == "demo-experiment"]
    files = json.loads(stack.rok("ls", bucket, "--json").out)
    assert [f["run_id"] for f in files] == [stack.run_id]
    versions = json.loads(stack.rok("ls", bucket, files[0]["name"], "--json").out)
    phases = [(v["step_name"] or "initial", v["phase"]) for v in versions]
    assert sorted(phases) == sorted(stack.committed)
    assert {v["url"] for v in versions} == {c.url for c in stack.committed.values()}


def test_ls_on_a_terminal_prints_a_table_with_each_versions_url(stack: Stack) -> None:
    bucket, file = stack.committed[("initial", "initial")].url.split("//")[1].split("?")[0].split("/")[1:3]
    result = stack.rok("ls", bucket, file)
    assert result.code == 0, result.err
    for commit in stack.committed.values():
        assert commit.url in result.out
    assert "prepare" in result.out and "after" in result.out


def test_show_names_the_step_and_every_volume_workspace_first(stack: Stack) -> None:
    url = stack.committed[("prepare", "after")].url
    result = stack.rok("show", url, "--json")
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    assert shown["version"]["step_name"] == "prepare" and shown["version"]["phase"] == "after"
    assert [m["volume"] for m in shown["members"]] == ["workspace", "data"]
    table = stack.rok("show", url)
    assert "prepare" in table.out and "workspace" in table.out and "data" in table.out


def test_restore_of_the_middle_steps_after_state_matches_what_the_volumes_held(stack: Stack, target: Path) -> None:
    url = stack.committed[("prepare", "after")].url
    result = stack.rok("restore", url, "--to", str(target), "--json")
    assert result.code == 0, result.err
    outcome = json.loads(result.out)
    assert outcome["state"] == "completed"
    held = stack.held[("prepare", "after")]
    assert tree(target / "workspace") == held["workspace"]
    assert tree(target / "data") == held["data"]
    assert "model.json" not in held["workspace"]  # the state after prepare, not the final one


def test_restore_of_one_volume_writes_it_into_the_directory_itself(stack: Stack, target: Path) -> None:
    url = stack.committed[("install", "after")].url
    result = stack.rok("restore", url, "--to", str(target), "--volume", "workspace")
    assert result.code == 0, result.err
    assert "restored" in result.out
    assert tree(target) == stack.held[("install", "after")]["workspace"]


def test_restore_into_a_non_empty_directory_fails_in_one_line_and_exits_1(stack: Stack, target: Path) -> None:
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    result = stack.rok("restore", stack.committed[("train", "after")].url, "--to", str(target))
    assert result.code == 1
    assert result.err.startswith("rok: error: restore of rok://") and "empty" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert (target / "keep.txt").read_text() == "mine"


def test_diff_of_a_steps_before_and_after_shows_what_the_step_changed(stack: Stack) -> None:
    before = stack.committed[("train", "before")].url
    after = stack.committed[("train", "after")].url
    result = stack.rok("diff", before, after, "--json")
    assert result.code == 0, result.err
    volumes = {v["volume"]: v for v in json.loads(result.out)["volumes"]}
    assert volumes["workspace"]["added"] == ["model.json"]
    assert volumes["workspace"]["changed"] == ["notes.txt"]
    assert volumes["workspace"]["removed"] == []
    assert volumes["data"]["unchanged"] is True
    table = stack.rok("diff", before, after)
    assert "model.json" in table.out and "notes.txt" in table.out


def test_an_unknown_version_is_one_line_and_exit_4(stack: Stack) -> None:
    url = stack.committed[("train", "after")].url.split("?")[0] + "?version=zzzz0000"
    result = stack.rok("show", url)
    assert result.code == 4
    assert result.err.startswith("rok: error:") and len(result.err.strip().splitlines()) == 1


def test_another_namespaces_url_is_refused_with_exit_4(stack: Stack) -> None:
    url = stack.committed[("train", "after")].url.replace(f"rok://{NAMESPACE}/", "rok://someone-else/")
    result = stack.rok("show", url)
    assert result.code == 4
    assert "someone-else" in result.err


def test_a_malformed_url_is_a_usage_error(stack: Stack) -> None:
    result = stack.rok("show", "http://not-a-rok-url")
    assert result.code == 2
    assert "rok://" in result.err


def test_without_a_bus_a_command_says_so_and_exits_75(stack: Stack) -> None:
    from roktesting.ports import free_port

    result = stack.rok("ls", ROK_NATS_URL=f"nats://127.0.0.1:{free_port()}")
    assert result.code == 75
    assert "cannot reach NATS" in result.err


def test_ls_lists_the_newest_first_up_to_its_limit_and_says_how_many_more_there_are(stack: Stack) -> None:
    bucket, file = stack.committed[("initial", "initial")].url.split("//")[1].split("?")[0].split("/")[1:3]
    every = json.loads(stack.rok("ls", bucket, file, "--all", "--json").out)
    assert len(every) == len(stack.committed)
    taken = [v["taken_at"] for v in every]
    assert taken == sorted(taken, reverse=True)

    first = stack.rok("ls", bucket, file, "--limit", "3")
    assert first.code == 0, first.err
    assert [v["url"] in first.out for v in every] == [True] * 3 + [False] * (len(every) - 3)
    assert f"… {len(every) - 3} more (of {len(every)}); --all lists every one, --limit N the first N" in first.err

    oldest = json.loads(stack.rok("ls", bucket, file, "--limit", "2", "--order", "oldest", "--json").out)
    assert [v["url"] for v in oldest] == [v["url"] for v in reversed(every)][:2]
