"""Looking inside versions in a cluster: the restorer answers only for a person who may read the version's namespace,
whoever relays the request; the file browser's pages refuse another profile's version; a step pod cannot ask."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from nats.errors import Error as NatsError
from rokcommon import permissions, subjects
from rokcommon.browse import BrowseClient
from rokcommon.errors import Forbidden, NotFound
from rokcommon.urls import parse_url

from .stage import ALICE, BOB, TEAM_A, TEAM_B, Stage, as_user, http

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _volume_url(stage: Stage) -> str:
    version = stage.version(TEAM_A)
    return version.members[0].url if version.members else version.url


async def test_the_restorer_checks_who_asks_to_look_inside_a_version(stage: Stage) -> None:
    url = _volume_url(stage)
    relay = await stage.nats.connect(permissions.CLI)  # allowed on the subject: the checks are the restorer's
    try:
        with pytest.raises(Forbidden, match="bob"):
            await BrowseClient(relay, TEAM_A, requested_by=BOB).list(url)
        with pytest.raises(Forbidden, match="names nobody"):
            await BrowseClient(relay, TEAM_A).read(url, "x", 0, 10)
        with pytest.raises(Forbidden, match=TEAM_B):  # the namespace claimed is not the URL's
            await BrowseClient(relay, TEAM_B, requested_by=BOB).stat(url)
        # alice passes every check and reaches the store (which this stage's forged snapshots are not in)
        with pytest.raises(NotFound, match="no rok repository"):
            await BrowseClient(relay, TEAM_A, requested_by=ALICE).list(url)
    finally:
        await relay.close()


async def test_the_file_browser_refuses_another_profiles_version(stage: Stage) -> None:
    url = stage.version(TEAM_A).url
    for route in ("", "/file", "/raw"):
        answer = await http(f"{stage.web}/browse{route}?url={quote(url)}&path=x", headers=as_user(BOB))
        assert answer.status == 403, (route, answer.status)
    assert parse_url(url).namespace == TEAM_A


async def test_a_step_pod_cannot_look_inside_a_version(stage: Stage) -> None:
    guard = await stage.nats.connect(permissions.GUARD)
    try:
        body = json.dumps({"namespace": TEAM_A, "url": _volume_url(stage), "op": "list", "requested_by": ALICE})
        with pytest.raises((NatsError, TimeoutError)):
            await guard.request(subjects.STORE_BROWSE, body.encode(), timeout=1)
    finally:
        await guard.close()
