"""The web pages page through a bucket's runs and a run's versions: next/prev links, order, status and step filters."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import AsyncIterator
from datetime import timedelta
from html import unescape

import pytest
from registry_testkit import RunScript
from rok_registry.api import create_app
from rok_registry.gate import Gate
from rok_registry.http_server import HttpServer
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rokcommon.authz import LocalAccess
from rokcommon.settings import RokSettings

NS = "team-a"
TOKEN = "the-local-users-token"
RUNS = 120


@pytest.fixture
async def site(recorder: Recorder, queries: Queries) -> AsyncIterator[str]:
    app = create_app(queries, settings=RokSettings(namespace=NS), gate=Gate(LocalAccess(TOKEN)))
    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    yield server.url
    await server.stop()


def get(url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def page(url: str) -> tuple[list[str], dict[str, str]]:
    """The names the page's list links to, and its pager's links by rel."""
    status, html = await asyncio.to_thread(get, url)
    assert status == 200, html
    names = re.findall(r'<a class="(?:file|bucket)" href="[^"]*">([^<]+)</a>', html)
    names += re.findall(r'data-version="([^"]+)"', html)
    links = {rel: unescape(href) for rel, href in re.findall(r'rel="(prev|next)" href="([^"]+)"', html)}
    return names, links


async def test_the_bucket_page_pages_through_its_runs_newest_first_and_filters_by_status(
    recorder: Recorder, queries: Queries, site: str
) -> None:
    for i in range(RUNS):
        script = RunScript(f"wf-{i:03d}", namespace=NS, run_name=f"run {i:03d}", steps=())
        started = script.started().model_copy(update={"started_at": script.clock + timedelta(minutes=i)})
        await recorder.record(started)
        if i % 10 == 0:
            await recorder.record(script.events()[-1].model_copy(update={"outcome": "failed"}))
    [bucket] = await queries.list_buckets(NS)
    newest_first = [f.name for f in await queries.list_files(NS, bucket.name)]

    first, links = await page(f"{site}/buckets/{bucket.name}")
    assert first == newest_first[:50] and set(links) == {"next"}
    second, links = await page(site + links["next"])
    assert second == newest_first[50:100] and set(links) == {"prev", "next"}
    back, _ = await page(site + links["prev"])
    assert back == first
    third, links = await page(site + links["next"])
    assert third == newest_first[100:] and set(links) == {"prev"}

    failed, links = await page(f"{site}/buckets/{bucket.name}?status=failed&order=oldest")
    expected = [f.name for f in reversed(await queries.list_files(NS, bucket.name)) if f.status == "failed"]
    assert failed == expected and len(failed) == RUNS // 10 and links == {}

    status, html = await asyncio.to_thread(get, f"{site}/buckets/{bucket.name}?status=sleeping")
    assert status == 400 and "not a filter of this list: status" in html


async def test_the_run_page_pages_through_its_versions_and_filters_by_step(
    recorder: Recorder, queries: Queries, site: str
) -> None:
    script = RunScript("wf-long", namespace=NS, steps=tuple(f"step-{i:02d}" for i in range(30)))
    for event in script.events():
        await recorder.record(event)
    [bucket] = await queries.list_buckets(NS)
    [run] = await queries.list_files(NS, bucket.name)
    oldest_first = [v.id for v in await queries.list_versions(NS, bucket.name, run.name)]
    assert len(oldest_first) == 61

    first, links = await page(f"{site}/buckets/{bucket.name}/{run.name}")
    assert first == oldest_first[::-1][:50] and set(links) == {"next"}
    rest, links = await page(site + links["next"])
    assert rest == oldest_first[::-1][50:] and set(links) == {"prev"}

    one_step, _ = await page(f"{site}/buckets/{bucket.name}/{run.name}?step=step-07&order=oldest")
    train = [v.id for v in await queries.list_versions(NS, bucket.name, run.name) if v.step_name == "step-07"]
    assert one_step == train and len(train) == 2

    status, html = await asyncio.to_thread(get, f"{site}/buckets/{bucket.name}/{run.name}/lineage")
    assert status == 200 and html.count('class="step"') == 30 and 'rel="next"' not in html
