"""The registry's gate on its own: host names, the gateway's header and its prefix, as a cluster configures them."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

from rok_registry.api import create_app
from rok_registry.database import Database
from rok_registry.gate import Gate
from rok_registry.http_server import HttpServer
from rok_registry.queries import Queries
from rokcommon.authz import KubernetesAccess, LocalAccess
from roktesting.kubeflow import add_profile, install_profile_roles
from roktesting.kubernetes import FakeKube


def test_host_names_are_compared_without_their_port_and_loopback_is_always_allowed() -> None:
    gate = Gate(LocalAccess("t"), hosts=("rok.example.com",))
    for host in ("127.0.0.1:8470", "localhost", "[::1]:8470", "ROK.example.com:443", "rok.example.com"):
        assert gate.host_allowed(host), host
    for host in ("attacker.example", "rok.example.com.attacker.example", "", "10.0.0.1:8470", "[::2]:80"):
        assert not gate.host_allowed(host), host
    assert Gate(LocalAccess("t"), hosts=("*",)).host_allowed("anything.example")


def _answer(url: str, headers: list[tuple[str, str]]) -> tuple[int, str]:
    request = urllib.request.Request(url)
    for name, value in headers:
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def _status(url: str, headers: list[tuple[str, str]]) -> int:
    return _answer(url, headers)[0]


async def test_the_gateways_prefix_is_stripped_and_a_header_without_it_names_nobody(
    fake_kube: FakeKube, database: Database
) -> None:
    install_profile_roles(fake_kube)
    add_profile(fake_kube, "team-a", "alice@example.com")
    gate = Gate(KubernetesAccess(fake_kube.api_client, ttl=0), prefix="accounts.google.com:")
    http = HttpServer(create_app(Queries(database), gate=gate), "127.0.0.1", 0)
    await http.start()
    try:
        url = f"{http.url}/api/v1/namespaces/team-a/buckets"
        with_prefix = [("kubeflow-userid", "accounts.google.com:alice@example.com")]
        without = [("kubeflow-userid", "alice@example.com")]
        statuses = [await asyncio.to_thread(_status, url, h) for h in (with_prefix, without, [])]
    finally:
        await http.stop()
    assert statuses == [200, 401, 401]


async def test_an_unexpected_failure_answers_500_and_tells_the_caller_nothing_of_the_internals(tmp_path: Path) -> None:
    unmigrated = Database(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables: every query fails as nobody planned
    http = HttpServer(create_app(Queries(unmigrated), gate=Gate(LocalAccess("t"))), "127.0.0.1", 0)
    await http.start()
    try:
        answers = [
            await asyncio.to_thread(_answer, f"{http.url}{path}", [("Authorization", "Bearer t")])
            for path in ("/api/v1/namespaces/local/buckets", "/")
        ]
    finally:
        await http.stop()
        await unmigrated.close()
    for status, body in answers:
        assert status == 500
        assert "Traceback" not in body and "sqlite" not in body.lower() and "no such table" not in body
    assert json.loads(answers[0][1])["error"]["message"] == "the registry could not answer; its log says why"


async def test_when_the_api_server_does_not_answer_nobody_is_let_in_and_the_answer_is_503(
    fake_kube: FakeKube, database: Database
) -> None:
    gate = Gate(KubernetesAccess(fake_kube.api_client, ttl=0))
    fake_kube.stop()  # neither TokenReview nor SubjectAccessReview can be asked now
    http = HttpServer(create_app(Queries(database), gate=gate), "127.0.0.1", 0)
    await http.start()
    try:
        url = f"{http.url}/api/v1/namespaces/team-a/buckets"
        bearer = await asyncio.to_thread(_answer, url, [("Authorization", "Bearer some-token")])
        header = await asyncio.to_thread(_answer, url, [("kubeflow-userid", "alice@example.com")])
    finally:
        await http.stop()
    for status, body in (bearer, header):
        assert status == 503, body
        assert json.loads(body)["error"]["kind"] == "unavailable"
        assert "access review" in json.loads(body)["error"]["message"]
