"""A search query far longer than any name is a request error, on the API and on the page, on both databases —
never a server error: 100 KB is refused as a query string (414) before anything reads it, 1,000 characters by
the search itself (400)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request

import pytest
from nats.aio.client import Client
from rok_registry.api import create_app
from rok_registry.gate import Gate
from rok_registry.http_server import HttpServer
from rok_registry.queries import Queries
from rok_registry.settings import RegistrySettings
from rokcommon.authz import LocalAccess
from rokcommon.errors import InvalidRequest
from rokcommon.registry_client import RegistryClient
from roktesting.ports import free_port

TOKEN = "the-local-users-token"


def get(url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_100_kb_search_query_is_refused_with_4xx(queries: Queries) -> None:
    app = create_app(queries, settings=RegistrySettings(namespace="team-a"), gate=Gate(LocalAccess(TOKEN)))
    http = HttpServer(app, "127.0.0.1", free_port())
    await http.start()
    try:
        huge = urllib.parse.urlencode({"q": "x" * 100_000})
        long = urllib.parse.urlencode({"q": "x" * 1_000})
        api, page, api_long, page_long = await asyncio.gather(
            asyncio.to_thread(get, f"{http.url}/api/v1/namespaces/team-a/search?{huge}"),
            asyncio.to_thread(get, f"{http.url}/search?{huge}"),
            asyncio.to_thread(get, f"{http.url}/api/v1/namespaces/team-a/search?{long}"),
            asyncio.to_thread(get, f"{http.url}/search?{long}"),
        )
        short = await asyncio.to_thread(get, f"{http.url}/api/v1/namespaces/team-a/search?q=nothing")
    finally:
        await http.stop()
    assert api[0] == 414 and "the query string is longer than 4096 bytes" in api[1], api
    assert page[0] == 414, page
    assert api_long[0] == 400, api_long
    assert "at most 500 characters" in api_long[1] and "1000" in api_long[1]
    assert page_long[0] == 400 and "at most 500 characters" in page_long[1], page_long[0]
    assert short == (200, "[]")


async def test_a_100_kb_search_asked_over_the_bus_is_refused_before_it_is_sent(nc: Client) -> None:
    with pytest.raises(InvalidRequest, match="text: String should have at most 500 characters"):
        await RegistryClient(nc, "team-a").search("x" * 100_000)
