"""The file browser in a real headless Chromium: from a version to its volumes, a directory, a file's first bytes,
its download, and one file compared across two versions — every byte read from the store by the restorer."""

from __future__ import annotations

import os
from pathlib import Path

from cli.stack import Stack  # on sys.path through conftest.py
from playwright.sync_api import Page, expect

from .screens import shot


def _run_path(stack: Stack) -> str:
    bucket, file = stack.committed[("initial", "initial")].url.split("?")[0].split("/")[3:5]
    return f"/buckets/{bucket}/{file}"


def test_a_version_is_browsed_down_to_a_files_text_and_its_download(page: Page, stack: Stack) -> None:
    after_train = stack.committed[("train", "after")]
    page.goto(_run_path(stack))
    page.locator(f"#v-{after_train.version_id} a.browse").click()
    names = page.locator("#entries tr.entry")
    expect(names).to_have_count(2)
    assert [n.get_attribute("data-name") for n in names.all()] == ["workspace", "data"]
    page.locator('#entries tr[data-name="workspace"] a').click()
    held = stack.held[("train", "after")]["workspace"]
    top = sorted({p.split("/")[0] for p in held})
    expect(page.locator("#entries tr.entry")).to_have_count(len(top))
    shot(page, "browse")
    notes = page.locator('#entries tr[data-name="notes.txt"]')
    expect(notes.locator("td.num")).to_have_text(f"{len(held['notes.txt'])} B")
    mode = os.stat(stack.volumes["workspace"] / "notes.txt").st_mode & 0o777
    expect(notes.locator("td.mono").first).to_have_text(
        "-" + "".join(ch if mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    )
    expect(page.locator('#entries tr[data-name="lib"] a')).to_have_text("lib/")
    page.locator('#entries tr[data-name="model.json"] a').click()
    expect(page.locator("#head")).to_have_text(held["model.json"].decode())
    shot(page, "browse-file")
    with page.expect_download() as download:
        page.locator("#download").click()
    path = download.value.path()
    assert Path(path).read_bytes() == held["model.json"]


def test_one_file_of_two_versions_is_compared_as_a_text_diff(page: Page, stack: Stack) -> None:
    before, after = stack.committed[("train", "before")], stack.committed[("train", "after")]
    page.goto(f"/browse/file?url={after.url.replace('&', '%26').replace('?', '%3F')}&path=workspace/notes.txt")
    expect(page.locator("#head")).to_contain_text("trained the model")
    page.locator("#file-compare input[name=b]").fill(before.url)
    page.locator("#file-compare button").click()
    diff = page.locator("#file-diff")
    expect(diff).to_contain_text("trained the model")
    expect(diff.locator(".diff_sub, .diff_add")).not_to_have_count(0)
    shot(page, "browse-diff")


def test_a_path_a_version_does_not_hold_is_a_not_found_page(page: Page, stack: Stack) -> None:
    url = stack.committed[("train", "after")].url
    page.goto(f"/browse?url={url.replace('&', '%26').replace('?', '%3F')}&path=workspace/no-such-dir")
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("main")).to_contain_text("no-such-dir")
