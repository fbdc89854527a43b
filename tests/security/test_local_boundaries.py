"""On one machine: the local user is whoever holds the token ``rok up`` wrote (mode 0600), and restores from the
pages go only into directories under the restore roots, never through a symlink out of them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rok_registry.main import Registry, build
from rok_registry.settings import RegistrySettings
from rokcommon.credentials import web_token
from roktesting.nats import NatsServer, running
from roktesting.ports import free_port

from .stage import http


@pytest.fixture
async def local(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Registry]:
    settings = RegistrySettings(
        nats_url=nats_server.url,
        state_dir=tmp_path / "state",
        registry_port=free_port(),
        log_format="text",
        restore_roots=str(tmp_path / "restores"),
    )
    (tmp_path / "restores").mkdir()
    registry = build(settings, graceful_timeout=2.0)
    await registry.start_storage()
    try:
        async with running(registry.service):
            yield registry
    finally:
        await registry.stop_storage()


async def test_the_token_opens_the_pages_once_and_a_strict_cookie_keeps_them_open(
    local: Registry, tmp_path: Path
) -> None:
    token_file = tmp_path / "state" / "web-token"
    assert token_file.stat().st_mode & 0o777 == 0o600  # other users of the machine cannot read it
    token, web = web_token(tmp_path / "state"), local.http.url
    assert (await http(f"{web}/")).status == 401
    assert (await http(f"{web}/?token=guessed")).status == 401
    assert (await http(f"{web}/", headers={"Cookie": "rok_token=guessed"})).status == 401

    first = await http(f"{web}/buckets/x?token={token}&ns=local")
    assert first.status == 303 and first.headers["location"] == "/buckets/x?ns=local"  # the token leaves the address
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"rok_token={token};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert (await http(f"{web}/", headers={"Cookie": f"rok_token={token}"})).status == 200
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await http(f"{web}/api/v1/namespaces/local/buckets", headers=bearer)).status == 200


async def test_a_restore_from_the_pages_writes_only_under_the_restore_roots(local: Registry, tmp_path: Path) -> None:
    token, web = web_token(tmp_path / "state"), local.http.url
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "restores" / "link").symlink_to(outside)
    url = "rok://local/b/f?version=abcd1234"
    headers = {"Cookie": f"rok_token={token}", "Content-Type": "application/json", "Origin": web}

    async def restore(target: str, **more: str) -> tuple[int, str]:
        body = json.dumps({"url": url, "target": target}).encode()
        answer = await http(f"{web}/restores", method="POST", headers={**headers, **more}, body=body)
        return answer.status, answer.body

    for target in (str(outside / "x"), str(tmp_path / "restores" / "link" / "x"), "/etc", "../../etc", "relative"):
        status, body = await restore(target)
        assert status == 403, (target, body)
    status, body = await restore(str(tmp_path / "restores" / "fine"), Origin="http://attacker.example")
    assert status == 403 and json.loads(body)["error"]["message"] == (
        "a state-changing request must come from this site's pages"
    )
    status, body = await restore(str(tmp_path / "restores" / "fine"))
    assert status == 202, body
    assert json.loads(body)["target"] == str((tmp_path / "restores" / "fine").resolve())
    assert list(outside.iterdir()) == []
