"""rok up's bus has users: every component connects with its own password, and nobody without one."""

from __future__ import annotations

import asyncio
import stat

import nats
import nats.errors
import pytest
from rokcommon.credentials import auth_dir, local_config
from rokcommon.permissions import LOCAL_USERS

from .stack import Stack


def test_rok_up_keeps_one_password_per_component_readable_by_its_owner_only(stack: Stack) -> None:
    directory = auth_dir(stack.state_dir)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for user in LOCAL_USERS:
        assert stat.S_IMODE((directory / user).stat().st_mode) == 0o600
        assert len((directory / user).read_text().strip()) >= 24
    config = local_config(stack.state_dir)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert 'user: "snapshotter"' in config.read_text()


def test_the_bus_rok_up_starts_refuses_a_client_without_credentials(stack: Stack) -> None:
    async def anonymous() -> None:
        nc = await nats.connect(stack.nats_url, allow_reconnect=False, connect_timeout=5)
        await nc.close()

    with pytest.raises((nats.errors.Error, OSError)):
        asyncio.run(anonymous())


def test_rok_commands_find_their_credentials_in_the_state_directory(stack: Stack) -> None:
    result = stack.rok("ls", "--json")
    assert result.code == 0, result.err
    assert result.out.strip().startswith("[")
