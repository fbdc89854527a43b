"""rok up / status / down: the system on this machine, started once, shown, and stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .stack import Stack, new_stack, rok

SERVICES = {"registry", "snapshotter", "restorer", "pipeline-watcher"}


def _pids(stack: Stack) -> dict[str, int]:
    status = stack.rok("status", "--json")
    return {row["name"]: row["pid"] for row in json.loads(status.out)["services"]}


def test_status_shows_every_service_running_with_its_pid_log_and_the_web_address(stack: Stack) -> None:
    result = stack.rok("status", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    rows = {row["name"]: row for row in report["services"]}
    assert set(rows) == SERVICES | {"nats-server"}
    for name in SERVICES:
        assert rows[name]["state"] == "running"
        os.kill(rows[name]["pid"], 0)  # the pid is a live process
        assert Path(rows[name]["log"]).is_relative_to(stack.state_dir)
        assert Path(rows[name]["log"]).stat().st_size > 0
    assert rows["nats-server"]["managed"] is True  # nothing answered at ROK_NATS_URL, so rok up started one
    assert report["web"] == f"{stack.web_url}/?token={stack.token}"  # the address opens the pages as it is


def test_status_on_a_terminal_is_a_table_naming_each_service(stack: Stack) -> None:
    result = stack.rok("status")
    assert result.code == 0
    for name in SERVICES:
        assert name in result.out
    assert stack.web_url in result.out


def test_up_again_starts_nothing_and_keeps_the_same_processes(stack: Stack) -> None:
    before = _pids(stack)
    result = stack.rok("up", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["started"] == []
    assert _pids(stack) == before


def test_up_after_a_service_died_starts_only_that_one(stack: Stack) -> None:
    before = _pids(stack)
    os.kill(before["restorer"], signal.SIGKILL)
    while _pids(stack)["restorer"] is not None:
        time.sleep(0.05)
    result = stack.rok("up", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["started"] == ["restorer"]
    after = _pids(stack)
    assert after["restorer"] != before["restorer"]
    assert {k: v for k, v in after.items() if k != "restorer"} == {k: v for k, v in before.items() if k != "restorer"}


def _gone(pid: int) -> bool:
    """No such process, or only its exit status is left (a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def test_two_rok_ups_at_once_start_each_once_and_down_stops_them_all(tmp_path: Path) -> None:
    stack = new_stack(tmp_path)
    rok_cli = Path(sys.executable).parent / "rok"
    env = {**os.environ, **stack.env}
    ups = [subprocess.Popen([rok_cli, "up", "--json"], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        results = [json.loads(up.communicate(timeout=120)[0]) for up in ups]
        assert [up.returncode for up in ups] == [0, 0]
        started = sorted(results[0]["started"] + results[1]["started"])
        assert started == sorted(SERVICES | {"nats-server"})  # each started exactly once
        pids = _pids(stack)
        assert all(pid is not None for pid in pids.values())
    finally:
        down = stack.rok("down", "--json")
    assert down.code == 0
    assert set(json.loads(down.out)["stopped"]) == SERVICES | {"nats-server"}
    assert all(_gone(pid) for pid in pids.values())
    status = stack.rok("status", "--json")
    assert status.code == 3
    assert {row["state"] for row in json.loads(status.out)["services"]} == {"stopped"}
    assert stack.rok("down").out.strip() == "nothing was running"


def test_a_pid_file_naming_another_process_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from roktesting.ports import free_port

    monkeypatch.setenv("ROK_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("ROK_NATS_URL", f"nats://127.0.0.1:{free_port()}")
    pid_file = tmp_path / "run" / "registry.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but not the registry: a recycled pid
    rows = {row["name"]: row for row in json.loads(rok("status", "--json").out)["services"]}
    assert rows["registry"]["state"] == "stopped" and rows["registry"]["pid"] is None
    assert not pid_file.exists()
    assert rok("down").out.strip() == "nothing was running"  # and it signalled nobody


def test_a_restore_nobody_takes_times_out_with_exit_75_naming_the_restorer(stack: Stack, tmp_path: Path) -> None:
    restorer = _pids(stack)["restorer"]
    os.kill(restorer, signal.SIGKILL)
    while _pids(stack)["restorer"] is not None:
        time.sleep(0.05)
    try:
        url = stack.committed[("train", "after")].url
        result = stack.rok("restore", url, "--to", str(tmp_path / "nobody"), "--timeout", "1")
        assert result.code == 75
        assert "did not finish within 1s" in result.err and "restorer" in result.err
    finally:
        assert stack.rok("up", "--json").code == 0  # the restorer is back for the other tests


def test_a_service_that_cannot_start_fails_rok_up_in_one_line_and_nothing_is_left_running(tmp_path: Path) -> None:
    stack = new_stack(tmp_path)
    with socket.socket() as taken:  # something else already listens on the registry's port
        taken.bind(("127.0.0.1", int(stack.env["ROK_REGISTRY_PORT"])))
        taken.listen()
        try:
            up = stack.rok("up")
            assert up.code == 1
            assert up.err.startswith("rok: error: registry exited") and "address already in use" in up.err
            assert str(stack.state_dir / "logs" / "registry.log") in up.err
            assert len(up.err.strip().splitlines()) == 1
            rows = {row["name"]: row for row in json.loads(stack.rok("status", "--json").out)["services"]}
            assert {rows[name]["state"] for name in SERVICES} == {"stopped"}
        finally:
            stack.rok("down")
