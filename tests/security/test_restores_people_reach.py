"""Restores people can reach in a cluster, through the registry's HTTP API and never the bus, checked at the front
door and again by the restorer:

- ``rok restore --pvc/--notebook`` from a notebook pod (``ROK_REGISTRY_URL`` and the pod's service account token),
  through ``POST /api/v1/restores``, followed by its id;
- the restore forms and the version picker in a real browser, for a person signed in through Kubeflow's gateway:
  a version as a new notebook server, one volume as a PVC; the picker, opened from the form, fills it.

What reaches the bus is checked field by field. The restorer here runs without its Kubernetes side, so a restore
that passed every check ends there, saying so (tests/deploy/test_cluster_flow.py goes on into the cluster).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect
from rokcommon import streams, subjects
from rokcommon.events import NotebookTarget, PvcTarget, RestoreRequested

from .stage import ALICE, BOB, CAROL, TEAM_A, TEAM_B, Stage, as_user, http, rok

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
REACHED_THE_TARGET = "needs the restorer's Kubernetes side"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: run `make setup`; the web pages are tested in a real browser")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


async def signed_in(browser: Browser, stage: Stage, user: str = ALICE) -> Page:
    """A page as the gateway serves it: every request carries the person's header."""
    context = await browser.new_context(base_url=stage.web, extra_http_headers={"kubeflow-userid": user})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    return page


async def last_request(stage: Stage) -> RestoreRequested:
    found = await stage.js.get_last_msg(streams.RESTORES.name, subjects.RESTORE_REQUESTED)
    return RestoreRequested.decode(found.data)


def _phase(stage: Stage, phase: str):
    return next(v for v in stage.versions[TEAM_A] if v.phase == phase)


async def test_a_version_is_restored_as_a_notebook_server_from_its_form(stage: Stage, browser: Browser) -> None:
    version = _phase(stage, "after")
    page = await signed_in(browser, stage)
    await page.goto(f"/buckets/{version.bucket}/{version.file}?ns={TEAM_A}")
    await page.locator(f"#v-{version.id} a.restore-notebook").click()

    await expect(page.locator("h1")).to_have_text("Restore as a new notebook server")
    await expect(page.locator("#form-url")).to_have_text(version.url)
    await expect(page.locator("#notebook-volumes tbody tr")).to_have_count(1)
    size = page.locator("input[name=size][data-volume=workspace]")
    await expect(size).to_have_value("1Gi")  # 100 bytes of data, no original claim recorded: the smallest
    await page.fill("#notebook-name", "alpha-again")
    await page.fill("#notebook-image", "jupyter/scipy:2")
    await size.fill("3Gi")
    await page.click("#form-start")
    await expect(page.locator("#form-message")).to_contain_text(REACHED_THE_TARGET)
    await page.context.close()

    request = await last_request(stage)
    assert request.url == version.url and request.requested_by == ALICE
    assert request.volumes == ("workspace",)
    assert request.target == NotebookTarget(
        namespace=TEAM_A, name="alpha-again", image="jupyter/scipy:2", sizes={"workspace": "3Gi"}
    )


async def test_the_picker_fills_the_pvc_form_with_a_steps_before_version(stage: Stage, browser: Browser) -> None:
    page = await signed_in(browser, stage)
    await page.goto(f"/restore/pvc?url={_phase(stage, 'after').url}&ns={TEAM_A}")
    await expect(page.locator("h1")).to_have_text("Restore one volume as a PVC")
    await expect(page.locator("#pvc-size")).to_have_value("1Gi")  # filled in from the chosen volume

    async with page.expect_popup() as opened:
        await page.click("a.pick")
    picker = await opened.value
    await picker.fill("#pick-search", "alpha-nightly")
    await picker.press("#pick-search", "Enter")
    await picker.locator("#pick-hits a").filter(has_text="alpha-nightly").first.click()
    row = picker.locator("#pick-versions tr").filter(has_text="alpha-train: before")
    chosen = await row.get_attribute("data-version")
    async with page.expect_navigation():
        await row.locator("a.choose").click()  # the picker closes; the form now holds the version chosen
    await expect(page.locator("#form-url")).to_contain_text(f"version={chosen}")
    await page.fill("#pvc-name", "alpha-before")
    await page.select_option("#pvc-access-mode", "ReadWriteMany")
    await page.fill("#pvc-storage-class", "nfs")
    await page.click("#form-start")
    await expect(page.locator("#form-message")).to_contain_text(REACHED_THE_TARGET)
    await page.context.close()

    request = await last_request(stage)
    before = _phase(stage, "before")
    assert chosen == before.id
    assert request.url == before.url
    assert request.volumes == ("workspace",)
    assert request.target == PvcTarget(
        namespace=TEAM_A, name="alpha-before", size="1Gi", access_mode="ReadWriteMany", storage_class="nfs"
    )


async def test_a_viewer_sees_why_the_form_cannot_restore(stage: Stage, browser: Browser) -> None:
    before = (await stage.js.stream_info(streams.RESTORES.name)).state.last_seq
    page = await signed_in(browser, stage, CAROL)
    await page.goto(f"/restore/pvc?url={_phase(stage, 'after').url}&ns={TEAM_A}")
    await page.click("#form-start")
    await expect(page.locator("#form-message")).to_contain_text("may not restore into a new PVC")
    await page.context.close()
    assert (await stage.js.stream_info(streams.RESTORES.name)).state.last_seq == before


# --- the CLI and the API ---------------------------------------------------------------------------------


async def requests_made(stage: Stage) -> int:
    info = await stage.js.stream_info(streams.RESTORES.name, subjects_filter=subjects.RESTORE_REQUESTED)
    return (info.state.subjects or {}).get(subjects.RESTORE_REQUESTED, 0)


def notebook_pod(stage: Stage, account: str = "default-editor") -> dict[str, str]:
    """What ``rok`` sees in a notebook server of team-a: the registry's address and its service account token."""
    token = stage.kube.tokens.service_account(TEAM_A, account)
    return {"ROK_REGISTRY_URL": stage.web, "ROK_TOKEN": token, "ROK_NATS_URL": "nats://127.0.0.1:1"}


async def test_rok_restore_into_a_new_pvc_from_a_notebook_pod_goes_through_the_api(stage: Stage) -> None:
    url = stage.version(TEAM_A).url
    before = await requests_made(stage)

    code, out, err = await asyncio.to_thread(
        rok, notebook_pod(stage), "restore", url, "--pvc", "restored-data", "--size", "20Gi", "--json"
    )

    # every check let it through: the restorer went as far as the target (it has no Kubernetes side here)
    assert code == 1, (out, err)
    assert REACHED_THE_TARGET in err
    assert await requests_made(stage) == before + 1
    request = await last_request(stage)
    assert request.url == url and request.namespace == TEAM_A
    assert request.requested_by == f"system:serviceaccount:{TEAM_A}:default-editor"
    assert request.target == PvcTarget(namespace=TEAM_A, name="restored-data", size="20Gi")


async def test_rok_restore_as_a_new_notebook_server_carries_its_image_and_volume_sizes(stage: Stage) -> None:
    url = stage.version(TEAM_A).url
    args = ["--notebook", "back-again", "--image", "jupyter/torch:2", "--volume-size", "data=50Gi", "--json"]

    code, out, err = await asyncio.to_thread(rok, notebook_pod(stage), "restore", url, *args)

    assert code == 1 and REACHED_THE_TARGET in err, (out, err)
    request = await last_request(stage)
    assert request.target == NotebookTarget(
        namespace=TEAM_A, name="back-again", image="jupyter/torch:2", sizes={"data": "50Gi"}
    )


async def test_a_viewer_service_account_may_not_restore_and_the_cli_says_so(stage: Stage) -> None:
    url = stage.version(TEAM_A).url
    before = await requests_made(stage)

    code, out, err = await asyncio.to_thread(
        rok, notebook_pod(stage, "default-viewer"), "restore", url, "--pvc", "nope"
    )

    assert code == 4, (out, err)
    assert "may not restore into a new PVC" in err
    assert await requests_made(stage) == before


async def test_the_api_refuses_what_no_restore_can_be_and_answers_in_the_apis_shape(stage: Stage) -> None:
    url = stage.version(TEAM_A).url
    refused = {
        "a host directory": ({"url": url, "kind": "directory", "target": "/tmp/x"}, 400, "never into a directory"),
        "a size that is no quantity": ({"url": url, "kind": "pvc", "target": "p", "size": "lots"}, 400, "quantity"),
        "an access mode that is none": (
            {"url": url, "kind": "pvc", "target": "p", "access_mode": "ReadWriteSometimes"},
            400,
            "access_mode",
        ),
        "a PVC name that is no DNS label": ({"url": url, "kind": "pvc", "target": "My_PVC"}, 400, "DNS label"),
        "per-volume sizes for a PVC": ({"url": url, "kind": "pvc", "target": "p", "sizes": {"a": "1Gi"}}, 400, "one"),
        "another namespace": ({"url": url, "kind": "pvc", "target": "p", "namespace": TEAM_B}, 403, "may not"),
    }
    before = await requests_made(stage)
    for case, (body, status, says) in refused.items():
        answer = await http(
            f"{stage.web}/api/v1/restores",
            method="POST",
            headers={**as_user(ALICE), "Content-Type": "application/json", "Origin": stage.web},
            body=json.dumps(body).encode(),
        )
        assert answer.status == status, (case, answer.body)
        error = answer.json()["error"]
        assert says in error["message"], (case, error)
        assert error["kind"] == ("forbidden" if status == 403 else "invalid"), case
    assert await requests_made(stage) == before


async def test_a_restore_is_followed_by_its_id_by_the_one_who_asked(stage: Stage) -> None:
    body = {"url": stage.version(TEAM_A).url, "kind": "pvc", "target": "followed"}
    headers = {**as_user(ALICE), "Content-Type": "application/json", "Origin": stage.web}
    asked = await http(f"{stage.web}/api/v1/restores", method="POST", headers=headers, body=json.dumps(body).encode())
    assert asked.status == 202, asked.body
    request_id = asked.json()["request_id"]
    follow = f"{stage.web}/api/v1/restores/{request_id}"

    state = {}
    for _ in range(200):
        state = (await http(follow, headers=as_user(ALICE))).json()
        if state["state"] == "failed":
            break
        await asyncio.sleep(0.05)

    assert state["target"] == f"{TEAM_A}/followed"
    assert REACHED_THE_TARGET in state["reason"]
    stranger = await http(follow, headers=as_user("mallory@example.com"))
    assert stranger.status == 404 and stranger.json()["error"]["kind"] == "not_found"


async def test_the_forms_and_the_picker_show_nothing_of_a_namespace_the_caller_may_not_read(stage: Stage) -> None:
    url = stage.version(TEAM_A).url
    for path in (
        f"/restore/notebook?url={url}&ns={TEAM_A}",
        f"/restore/pvc?url={url}&ns={TEAM_A}",
        f"/pick?ns={TEAM_A}",
    ):
        answer = await http(f"{stage.web}{path.replace('?url=rok://', '?url=rok%3A//')}", headers=as_user(BOB))
        assert answer.status == 403, (path, answer.status)
        assert "alpha" not in answer.body, path
