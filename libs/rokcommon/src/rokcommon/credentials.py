"""The NATS credentials a process connects with, the local ones ``rok up`` generates, and the web token.

A process connects as ``ROK_NATS_USER`` with ``ROK_NATS_PASSWORD`` (a service in Kubernetes gets both from its
Secret; ``rok up`` hands them to the services it starts). A command on the machine that ran ``rok up`` sets
neither: it reads the password of its local user (``cli``, or ``runner`` for ``rok run``) from the state
directory, ``<state>/nats-auth/<user>``, readable by its owner only. Without either, it connects without
credentials, which a server without ``authorization`` accepts.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from rokcommon.permissions import LOCAL_USERS, inbox_prefix, render, table
from rokcommon.settings import RokSettings

AUTH_DIR = "nats-auth"
CONFIG = "nats.conf"


def auth_dir(state_dir: Path) -> Path:
    return state_dir.expanduser() / AUTH_DIR


def connect_options(settings: RokSettings, local_user: str | None = None) -> dict[str, str]:
    """The options of ``nats.connect`` that identify this process (user, password, its inbox prefix)."""
    user, password = settings.nats_user, settings.nats_password.get_secret_value()
    if not user and local_user:
        stored = read_local(settings.state_dir, local_user)
        if stored is not None:
            user, password = local_user, stored
    if not user:
        return {}
    return {"user": user, "password": password, "inbox_prefix": inbox_prefix(user)}


def read_local(state_dir: Path, user: str) -> str | None:
    try:
        return (auth_dir(state_dir) / user).read_text().strip() or None
    except (FileNotFoundError, PermissionError):
        return None


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, created so (no moment with wider permissions)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def generate_local(state_dir: Path) -> dict[str, str]:
    """Give every local user a random password (kept if it has one) and write the nats-server config for them.

    Returns user → password; the config is ``<state>/nats-auth/nats.conf``, every file mode 0600.
    """
    directory = auth_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    passwords: dict[str, str] = {}
    for user in LOCAL_USERS:
        password = read_local(state_dir, user)
        if password is None:
            password = secrets.token_urlsafe(24)
            _write_private(directory / user, password + "\n")
        passwords[user] = password
    _write_private(directory / CONFIG, render(table(LOCAL_USERS), passwords))
    return passwords


def local_config(state_dir: Path) -> Path:
    return auth_dir(state_dir) / CONFIG


WEB_TOKEN = "web-token"


def web_token(state_dir: Path, *, create: bool = True) -> str:
    """The local user's token for the registry's API and pages, ``<state>/web-token`` (mode 0600), made once
    (``create=False``: "" if it was not made yet).

    ``rok up`` puts it into the web address it prints (``?token=…``, as Jupyter does); the CLI and the registry
    read it here. Other users of the machine cannot read it, and a page in the browser cannot guess it.
    """
    path = state_dir.expanduser() / WEB_TOKEN
    try:
        stored = path.read_text().strip()
    except FileNotFoundError:
        stored = ""
    if stored or not create:
        return stored
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    _write_private(path, token + "\n")
    return token
