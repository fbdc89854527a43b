"""What comes from pipelines is shown escaped on every page; what comes from a request is bounded, refused with
a 4xx that shows no internals, and the registry keeps answering."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
import pytest_asyncio
from pydantic import ValidationError
from rokcommon import bus
from rokcommon.events import VolumeRef

from .stage import ALICE, TEAM_A, Stage, as_user, eventually, http, recorded_run

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOSTILE = '<script>alert("x")</script> \'q\' "dq" & ü漢字'


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hostile(stage: Stage) -> dict[str, str]:
    """A run in team-a whose experiment, run, pipeline and step are all named ``HOSTILE``."""
    for event in recorded_run(TEAM_A, "wf-hostile", experiment=HOSTILE, run_name=HOSTILE, step=HOSTILE):
        await bus.publish(stage.js, event)

    async def recorded() -> dict[str, str]:
        buckets = await stage.registry.queries.list_buckets(TEAM_A)
        bucket = next((b for b in buckets if b.experiment == HOSTILE), None)
        if bucket is None:
            return {}
        files = await stage.registry.queries.list_files(TEAM_A, bucket.name)
        return {"bucket": bucket.name, "file": files[0].name} if files else {}

    return await eventually(recorded)


async def test_names_from_pipelines_are_escaped_on_every_page(stage: Stage, hostile: dict[str, str]) -> None:
    b, f = quote(hostile["bucket"]), quote(hostile["file"])
    pages = ["/?ns=team-a", f"/buckets/{b}", f"/buckets/{b}/{f}", f"/buckets/{b}/{f}/lineage", "/search?q=script"]
    for page in pages:
        answer = await http(stage.web + page, headers={**as_user(ALICE), "Cookie": "rok_ns=team-a"})
        assert answer.status == 200, page
        assert "<script>alert" not in answer.body, page
        assert "&lt;script&gt;alert(" in answer.body, page
        assert "ü漢字" in answer.body, page  # Unicode shown as it is
        assert "'q' \"dq\"" not in answer.body, page  # quotes escaped too: no attribute can be closed by a name
    # a volume's name never gets that far: the event that names one so is invalid
    with pytest.raises(ValidationError):
        VolumeRef(name="<script>", role="data", path="/vol/x")


async def test_oversized_and_malformed_requests_get_a_4xx_without_internals_and_the_registry_stays_up(
    stage: Stage,
) -> None:
    alice = as_user(ALICE)
    api = stage.api(TEAM_A)
    post = {**alice, "Content-Type": "application/json", "Origin": stage.web}
    answers = {
        "a query string of 10 kB": await http(f"{api}/search?q={'a' * 10_000}", headers=alice),
        "a page's query string of 10 kB": await http(f"{stage.web}/search?q={'a' * 10_000}", headers=alice),
        "a body of 100 kB": await http(
            f"{stage.web}/restores", method="POST", headers=post, body=json.dumps({"url": "x" * 100_000}).encode()
        ),
        "a body that is not JSON": await http(f"{stage.web}/restores", method="POST", headers=post, body=b"{nope"),
        "a body with unknown fields": await http(
            f"{stage.web}/restores",
            method="POST",
            headers=post,
            body=json.dumps({"url": "u", "target": "t", "x": 1}).encode(),
        ),
        "a limit that is not a number": await http(f"{api}/search?q=a&limit=lots", headers=alice),
        "a phase that does not exist": await http(f"{api}/find?workflow_uid=w&phase=sideways", headers=alice),
        "a malformed URL": await http(f"{api}/resolve?url={quote('rok://../../etc')}", headers=alice),
        "a page that does not exist": await http(f"{stage.web}/no/such/page", headers=alice),
    }
    for case, answer in answers.items():
        assert 400 <= answer.status < 500, (case, answer.status)
        assert "Traceback" not in answer.body and 'File "' not in answer.body, case
    assert answers["a query string of 10 kB"].status == 414
    assert answers["a body of 100 kB"].status == 413
    assert (await http(f"{stage.web}/healthz")).status == 200
    assert (await http(f"{api}/buckets", headers=alice)).status == 200
