"""The snapshot browser in a real headless Chromium: buckets → runs → versions, lineage, search, restore."""

from __future__ import annotations

from pathlib import Path

from cli.stack import Stack, tree  # on sys.path through conftest.py
from playwright.sync_api import Browser, Page, expect

from .screens import shot


def _run_path(stack: Stack) -> str:
    bucket, file = stack.committed[("initial", "initial")].url.split("?")[0].split("/")[3:5]
    return f"/buckets/{bucket}/{file}"


def test_clicking_from_buckets_to_a_run_lists_every_version_with_step_phase_tags_and_url(
    page: Page, stack: Stack
) -> None:
    page.goto("/")
    shot(page, "buckets")
    page.locator("#buckets a.bucket", has_text="demo-experiment").click()  # other tests add buckets of their own
    expect(page.locator("h1")).to_contain_text("demo-experiment")
    shot(page, "files")
    page.locator("#files a.file").first.click()
    rows = page.locator("#versions tr.version")
    expect(rows).to_have_count(len(stack.committed))
    shot(page, "versions")
    shown = {row.locator("code.url").inner_text() for row in rows.all()}
    assert shown == {c.url for c in stack.committed.values()}
    after_prepare = stack.committed[("prepare", "after")]
    row = page.locator(f"#v-{after_prepare.version_id}")
    expect(row.locator("td").nth(1)).to_have_text("prepare")
    expect(row.locator(".phase")).to_have_text("after")
    expect(page.locator(f"#v-{stack.committed[('initial', 'initial')].version_id} .tag")).to_contain_text("initial")
    expect(row.locator("td.num").nth(0)).not_to_have_text("-")


def test_the_copy_button_puts_the_versions_url_on_the_clipboard(page: Page, stack: Stack) -> None:
    commit = stack.committed[("train", "after")]
    page.goto(_run_path(stack))
    button = page.locator(f"#v-{commit.version_id} button.copy")
    button.click()
    expect(button).to_have_text("copied")
    assert page.evaluate("navigator.clipboard.readText()") == commit.url


def test_the_lineage_shows_the_steps_in_order_with_their_versions_and_what_each_changed(
    page: Page, stack: Stack
) -> None:
    page.goto(_run_path(stack))
    page.locator("a.lineage-link").first.click()
    steps = page.locator("#lineage li.step[data-step]")
    expect(steps).to_have_count(3)
    assert [s.get_attribute("data-step") for s in steps.all()] == ["install", "prepare", "train"]
    shot(page, "lineage")
    train = page.locator('li.step[data-step="train"]')
    expect(train.locator(".vcell").nth(0)).to_contain_text(stack.committed[("train", "before")].version_id)
    expect(train.locator(".vcell").nth(1)).to_contain_text(stack.committed[("train", "after")].version_id)
    workspace = train.locator('.volume-changes[data-volume="workspace"]')
    expect(workspace.locator("li.added")).to_have_text(["+ model.json"])
    expect(workspace.locator("li.changed")).to_have_text(["~ notes.txt"])
    expect(train.locator('.volume-changes[data-volume="data"] .unchanged')).to_be_visible()
    prepare_data = page.locator('li.step[data-step="prepare"] .volume-changes[data-volume="data"]')
    expect(prepare_data.locator("li.added")).to_have_text(["+ points.csv"])


def test_compare_in_full_lists_every_path_a_step_changed_as_the_restorer_computed_it(page: Page, stack: Stack) -> None:
    page.goto(_run_path(stack) + "/lineage")
    page.locator('li.step[data-step="train"] a.compare-link').click()
    expect(page.locator("h1")).to_have_text("Compare two versions")
    assert page.locator("input[name=a]").input_value() == stack.committed[("train", "before")].url
    assert page.locator("input[name=b]").input_value() == stack.committed[("train", "after")].url
    workspace = page.locator('#compare .volume-changes[data-volume="workspace"]')
    expect(workspace.locator("li.added")).to_have_text(["+ model.json"])
    expect(workspace.locator("li.changed")).to_have_text(["~ notes.txt"])
    expect(page.locator('#compare .volume-changes[data-volume="data"] .unchanged')).to_be_visible()
    expect(page.locator("#compare .total")).to_have_text("2 path(s) changed")


def test_comparing_a_malformed_url_says_what_is_wrong(page: Page, stack: Stack) -> None:
    page.goto("/compare?a=rok%3A%2F%2Fnot-a-url&b=rok%3A%2F%2Fnot-either")
    expect(page.locator("h1")).to_have_text("Not understood")


def test_searching_a_url_opens_its_run_with_the_version_marked(page: Page, stack: Stack) -> None:
    commit = stack.committed[("install", "before")]
    page.goto("/")
    page.fill("header input[name=q]", commit.url)
    page.press("header input[name=q]", "Enter")
    expect(page.locator(f"#v-{commit.version_id}")).to_have_class("version selected")


def test_searching_a_bucket_name_finds_the_bucket(page: Page, stack: Stack) -> None:
    page.goto("/")
    page.fill("header input[name=q]", "demo-experiment")
    page.press("header input[name=q]", "Enter")
    hit = page.locator("#hits li.hit.bucket a").first
    expect(hit).to_be_visible()
    hit.click()
    expect(page.locator("#files a.file")).to_have_count(1)


def test_restoring_from_the_page_shows_progress_until_it_completes(page: Page, stack: Stack, tmp_path: Path) -> None:
    commit = stack.committed[("prepare", "after")]
    target = tmp_path / "from-the-web"
    page.goto(_run_path(stack))
    page.locator(f"#v-{commit.version_id} button.restore").click()
    expect(page.locator("#restore-dialog")).to_be_visible()
    page.fill("#restore-target", str(target))
    page.click("#restore-start")
    expect(page.locator("#restore-message")).to_contain_text("Restored", timeout=30_000)
    expect(page.locator("#restore-state")).to_contain_text("completed")
    shot(page, "restore")
    held = stack.held[("prepare", "after")]
    assert tree(target / "workspace") == held["workspace"]
    assert tree(target / "data") == held["data"]


def test_a_restore_that_fails_shows_the_reason(page: Page, stack: Stack, tmp_path: Path) -> None:
    commit = stack.committed[("train", "after")]
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    page.goto(_run_path(stack))
    page.locator(f"#v-{commit.version_id} button.restore").click()
    page.fill("#restore-target", str(target))
    page.select_option("#restore-volume", "workspace")
    page.click("#restore-start")
    expect(page.locator("#restore-message")).to_contain_text("Restore failed", timeout=30_000)
    expect(page.locator("#restore-message")).to_contain_text("empty")
    assert (target / "keep.txt").read_text() == "mine"


def test_an_unknown_run_is_a_not_found_page(page: Page, stack: Stack) -> None:
    response = page.goto("/buckets/no-such-bucket/no-such-run")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")


def test_searching_a_run_id_finds_its_run(page: Page, stack: Stack) -> None:
    page.goto("/")
    page.fill("header input[name=q]", stack.run_id)
    page.press("header input[name=q]", "Enter")
    hit = page.locator("#hits li.hit.file a")
    expect(hit).to_have_count(1)
    hit.click()
    expect(page.locator("#versions tr.version")).to_have_count(len(stack.committed))


def test_the_address_rok_up_prints_lets_the_browser_in_and_a_cookie_keeps_it_in(browser: Browser, stack: Stack) -> None:
    context = browser.new_context(base_url=stack.web_url)  # a browser that never visited: no cookie
    try:
        page = context.new_page()
        refused = page.goto("/")
        assert refused is not None and refused.status == 401
        page.goto(f"/?token={stack.token}")
        assert "token" not in page.url  # the token leaves the address bar (and the history)
        expect(page.locator("#buckets a.bucket").first).to_be_visible()
        # the next page needs no token: the cookie carries it
        page.locator("#buckets a.bucket", has_text="demo-experiment").click()
        expect(page.locator("h1")).to_contain_text("demo-experiment")
        [cookie] = [c for c in context.cookies() if c["name"] == "rok_token"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie").find(stack.token) == -1  # the page's scripts cannot read it
    finally:
        context.close()
