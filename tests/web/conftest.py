from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the local stack helper is shared with cli/
from cli.stack import Stack, shared_stack

expect.set_options(timeout=15_000)  # a loaded two-core machine runs the services, the browser and the tests

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """rok up with one three-step run recorded (shared with the CLI's tests); the pages are at ``stack.web_url``."""
    with shared_stack(tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Browser]:
    """Debian's chromium, headless, driven by playwright (after the stack is up: playwright runs an event loop)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "chromium is not installed: run `make setup` (or `apt-get install -y chromium`); "
            "the web pages are tested in a real browser",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(base_url=stack.web_url, viewport={"width": 1400, "height": 900})
    # as after the first visit to the address rok up printed: the token is a cookie
    context.add_cookies([{"name": "rok_token", "value": stack.token, "url": stack.web_url}])
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.web_url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
