"""A search query far longer than any name (100 KB) is a request error (HTTP 400), on the API and on the page,
on both databases — never a server error."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request

import pytest
from nats.aio.client import Client
from rok_registry.api import create_app
from rok_registry.http_server import HttpServer
from rok_registry.queries import Queries
from rok_registry.settings import RegistrySettings
from rokcommon.errors import InvalidRequest
from rokcommon.registry_client import RegistryClient
from roktesting.ports import free_port


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_100_kb_search_query_is_refused_with_400(queries: Queries) -> None:
    http = HttpServer(create_app(queries, settings=RegistrySettings()), "127.0.0.1", free_port())
    await http.start()
    try:
        long = urllib.parse.urlencode({"q": "x" * 100_000})
        api, page = await asyncio.gather(
            asyncio.to_thread(get, f"{http.url}/api/v1/namespaces/team-a/search?{long}"),
            asyncio.to_thread(get, f"{http.url}/search?{long}"),
        )
        short = await asyncio.to_thread(get, f"{http.url}/api/v1/namespaces/team-a/search?q=nothing")
    finally:
        await http.stop()
    assert api[0] == 400, api
    assert "at most 500 characters" in api[1] and "100000" in api[1]
    assert page[0] == 400 and "at most 500 characters" in page[1], page[0]
    assert short == (200, "[]")


async def test_a_100_kb_search_asked_over_the_bus_is_refused_before_it_is_sent(nc: Client) -> None:
    with pytest.raises(InvalidRequest, match="text: String should have at most 500 characters"):
        await RegistryClient(nc, "team-a").search("x" * 100_000)
