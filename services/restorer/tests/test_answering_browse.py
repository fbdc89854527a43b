"""The restorer answers ``rok.store.browse.v1``: entries, directory pages and file bytes of one volume of a version,
each request checked as a restore is, every reply within one bus message."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from restorer_testkit import NAMESPACE, VERSION_URL, FakeRegistry, Stored
from rokcommon.browse import BrowseClient, read_size
from rokcommon.errors import Forbidden, InvalidRequest, NotFound, TemporaryError
from rokcommon.service import Service
from rokcommon.urls import format_url, parse_url

WORKSPACE_URL = format_url(NAMESPACE, "exp-3mis2", "train-3mis2-a1b2", parse_url(VERSION_URL).version, "workspace")


@pytest.fixture
def volume(registry: FakeRegistry, stored: Stored) -> str:
    registry.answers[WORKSPACE_URL] = stored.resolved(WORKSPACE_URL, ("workspace",))
    return WORKSPACE_URL


async def test_a_volume_is_listed_and_read_as_it_was_snapshotted(
    restorer: Service, stored: Stored, volume: str, nc: Client
) -> None:
    client = BrowseClient(nc, NAMESPACE)
    root = await client.list(volume)
    assert [e.name for e in root.items] == ["big.bin", "link", "sub"]
    assert root.total == 3 and root.next is None
    link = await client.stat(volume, "link")
    assert (link.kind, link.target) == ("symlink", "sub/small-1.txt")
    run = await client.stat(volume, "sub/deeper/run.sh")
    assert (run.kind, run.mode, run.size) == ("file", 0o755, len("#!/bin/sh\necho hi\n"))
    # a page at a time, in name order
    first = await client.list(volume, "sub", 0, 5)
    assert first.total == 21 and first.next == 5
    everything = [e.name async for e in client.list_all(volume, "sub")]
    assert everything == sorted(p.name for p in (stored.volumes["workspace"] / "sub").iterdir())
    assert [e.name for e in first.items] == everything[:5]
    # a file larger than one bus message comes in several replies, byte for byte
    big = (stored.volumes["workspace"] / "big.bin").read_bytes()
    assert len(big) > read_size(nc)
    assert await client.read(volume, "big.bin", 0, len(big) + 10) == big
    assert await client.read(volume, "big.bin", 12345, 100) == big[12345:12445]


async def test_what_is_not_there_or_not_a_file_is_named(restorer: Service, volume: str, nc: Client) -> None:
    client = BrowseClient(nc, NAMESPACE)
    with pytest.raises(NotFound, match="sub/nothing"):
        await client.stat(volume, "sub/nothing")
    with pytest.raises(InvalidRequest, match="not a regular file"):
        await client.read(volume, "sub", 0, 10)
    with pytest.raises(InvalidRequest, match="&volume="):  # a version of two volumes: which one?
        await client.list(VERSION_URL)


async def test_another_namespaces_version_is_refused(restorer: Service, volume: str, nc: Client) -> None:
    with pytest.raises(Forbidden, match="team-a"):
        await BrowseClient(nc, "team-b").read(volume, "big.bin", 0, 10)
    other = format_url("team-b", "exp-3mis2", "train-3mis2-a1b2", "k3x9q2mf", "workspace")
    with pytest.raises(Forbidden, match="team-b"):
        await BrowseClient(nc, NAMESPACE).list(other)


async def test_without_a_restorer_a_look_inside_says_who_should_answer(nc: Client) -> None:
    with pytest.raises(TemporaryError, match="rok-restorer"):
        await BrowseClient(nc, NAMESPACE, timeout=2).list(WORKSPACE_URL)
