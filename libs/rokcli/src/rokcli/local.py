"""``rok up``, ``rok down``, ``rok status``: the whole system on this machine, in the background.

``rok up`` starts a ``nats-server -js`` only when none answers at ``ROK_NATS_URL``, then the four services
(``python -m rok_<name>``) on the embedded defaults (file store and SQLite under the state directory), and
waits until each has logged that it is ready. Running it again starts only what is not running.
Pids and logs live under ``ROK_STATE_DIR`` (default ``~/.local/state/rok``): ``run/*.pid`` and ``logs/*.log``.
The nats-server it starts requires a user per component (``nats-auth/nats.conf``, random passwords, mode 0600);
each service gets its own through ``ROK_NATS_USER``/``ROK_NATS_PASSWORD``, and ``rok`` commands read theirs there.
The web pages and the HTTP API admit the local user by a token, ``web-token`` in the state directory (mode 0600):
the address ``rok up`` and ``rok status`` print carries it (``?token=…``, as Jupyter's does), and the browser keeps
it as a cookie after the first visit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from pydantic import Field
from rokcommon.credentials import generate_local, local_config, web_token
from rokcommon.errors import PermanentError
from rokcommon.settings import RokSettings

from rokcli.processes import Managed, nats_address, port_open, stop_all, wait_port, wait_ready

# (name, module) in start order: the registry before the restorer, which resolves URLs through it.
SERVICES: tuple[tuple[str, str], ...] = (
    ("registry", "rok_registry"),
    ("snapshotter", "rok_snapshotter"),
    ("restorer", "rok_restorer"),
    ("pipeline-watcher", "rok_pipeline_watcher"),
)
NATS = "nats-server"


class LocalSettings(RokSettings):
    """What ``rok up`` needs to know beyond every process's settings: where the registry serves HTTP."""

    registry_host: str = Field("127.0.0.1", description="address the registry's HTTP API and web pages bind")
    registry_port: int = Field(8470, description="port of the registry's HTTP API and web pages")
    start_timeout: float = Field(60.0, gt=0, description="seconds rok up waits for each service to be ready")
    stop_timeout: float = Field(10.0, gt=0, description="seconds rok down waits after SIGTERM before SIGKILL")

    @property
    def web_url(self) -> str:
        """The web pages' address with the local user's token (once rok up made it), to open as it is."""
        token = web_token(_state_dir(self), create=False)
        address = f"http://{self.registry_host}:{self.registry_port}/"
        return f"{address}?token={token}" if token else address


def _state_dir(settings: LocalSettings) -> Path:
    return settings.state_dir.expanduser().resolve()


def services(settings: LocalSettings) -> list[Managed]:
    state = _state_dir(settings)
    return [Managed(name, (sys.executable, "-m", module), state, module) for name, module in SERVICES]


def nats_process(settings: LocalSettings) -> Managed:
    state = _state_dir(settings)
    _, port = nats_address(settings.nats_url)
    binary = shutil.which("nats-server") or "nats-server"
    argv = (
        binary,
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-sd",
        str(state / "nats"),
        "-c",
        str(local_config(state)),
    )
    return Managed(NATS, argv, state, "nats-server")


def _service_env(settings: LocalSettings) -> dict[str, str]:
    env = dict(os.environ)
    env["ROK_STATE_DIR"] = str(_state_dir(settings))
    env["ROK_NATS_URL"] = settings.nats_url
    env.setdefault("ROK_LOG_FORMAT", "json")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _credentials_env(env: dict[str, str], user: str, passwords: dict[str, str]) -> dict[str, str]:
    """A service's environment with its own NATS user (the one its name says) and password."""
    return {**env, "ROK_NATS_USER": user, "ROK_NATS_PASSWORD": passwords[user]}


@contextlib.contextmanager
def _exclusive(settings: LocalSettings) -> Iterator[None]:
    """One rok up or rok down at a time per state directory (two at once would start everything twice)."""
    lock_file = _state_dir(settings) / "run" / "rok.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def bring_up(settings: LocalSettings) -> dict[str, Any]:
    """Start what is not running; return what was started and what already ran."""
    with _exclusive(settings):
        return _bring_up(settings)


def _bring_up(settings: LocalSettings) -> dict[str, Any]:
    state = _state_dir(settings)
    state.mkdir(parents=True, exist_ok=True)
    started: list[str] = []
    host, port = nats_address(settings.nats_url)
    passwords = generate_local(state)  # one NATS user per component, random passwords, files mode 0600
    web_token(state)  # the local user's token for the web pages and the HTTP API, mode 0600
    nats = nats_process(settings)
    if not port_open(port, host):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise PermanentError(f"no NATS server answers at {settings.nats_url}, and rok up starts one only locally")
        if shutil.which("nats-server") is None:
            raise PermanentError("nats-server is not installed: run `make setup` (or `apt-get install nats-server`)")
        (state / "nats").mkdir(parents=True, exist_ok=True)
        process, offset = nats.spawn(_service_env(settings))
        try:
            wait_port(port, timeout=15, what="nats-server")
        except Exception:
            if process.poll() is not None:
                raise PermanentError(
                    f"nats-server exited with status {process.returncode}; see {nats.log_file}: {nats.log_tail(offset)}"
                ) from None
            raise
        started.append(NATS)

    env = _service_env(settings)
    starting = []
    for managed in services(settings):
        if managed.pid() is None:
            process, offset = managed.spawn(_credentials_env(env, managed.name, passwords))
            starting.append((managed, process, offset))
            started.append(managed.name)
    ports = {"registry": settings.registry_port}
    try:
        wait_ready(starting, timeout=settings.start_timeout, ports=ports)
    except BaseException:
        # Leave nothing half-started behind; the logs stay for the reader.
        stop_all([managed for managed, _, _ in starting], settings.stop_timeout)
        raise
    return {"started": started, "services": status_of(settings)}


def bring_down(settings: LocalSettings) -> list[str]:
    """Stop the services (all at once), then the nats-server rok up started; return what was running."""
    with _exclusive(settings):
        stopped = stop_all(list(reversed(services(settings))), settings.stop_timeout)
        return stopped + stop_all([nats_process(settings)], settings.stop_timeout)


def status_of(settings: LocalSettings) -> list[dict[str, Any]]:
    rows = []
    nats = nats_process(settings)
    host, port = nats_address(settings.nats_url)
    nats_pid = nats.pid()
    reachable = port_open(port, host)
    rows.append(
        {
            "name": NATS,
            "state": "running" if reachable else "stopped",
            "pid": nats_pid,
            "log": str(nats.log_file) if nats_pid else None,
            "address": settings.nats_url,
            "managed": nats_pid is not None,
        }
    )
    for managed in services(settings):
        pid = managed.pid()
        rows.append(
            {
                "name": managed.name,
                "state": "running" if pid else "stopped",
                "pid": pid,
                "log": str(managed.log_file),
                "address": settings.web_url if managed.name == "registry" else None,
            }
        )
    return rows


def _table(rows: list[dict[str, Any]], web_url: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("service", "state", "pid", "log"):
        table.add_column(column)
    for row in rows:
        state = row["state"]
        colour = "green" if state == "running" else "red"
        log = row["log"] or ("(not started by rok up)" if state == "running" else "")
        table.add_row(row["name"], f"[{colour}]{state}[/]", str(row["pid"] or "-"), log)
    console = Console(width=100_000)
    console.print(table)
    console.print(f"web: {web_url}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def up(as_json: bool) -> None:
    """Start nats-server (if none answers) and the four services in the background; idempotent."""
    settings = LocalSettings()
    result = bring_up(settings)
    if as_json:
        click.echo(json.dumps({**result, "web": settings.web_url}))
        return
    started = result["started"]
    click.echo(f"started: {', '.join(started)}" if started else "already running")
    _table(result["services"], settings.web_url)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def down(as_json: bool) -> None:
    """Stop the services rok up started (SIGTERM, then SIGKILL after ROK_STOP_TIMEOUT seconds)."""
    stopped = bring_down(LocalSettings())
    if as_json:
        click.echo(json.dumps({"stopped": stopped}))
    else:
        click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def status(as_json: bool) -> None:
    """Show each local service: running or stopped, pid, log. Exits 3 unless everything runs."""
    settings = LocalSettings()
    rows = status_of(settings)
    if as_json:
        click.echo(json.dumps({"services": rows, "web": settings.web_url}))
    else:
        _table(rows, settings.web_url)
    if any(row["state"] != "running" for row in rows):
        sys.exit(3)
