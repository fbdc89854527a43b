"""The API's documentation page works offline: every script and style comes from the registry itself."""

from __future__ import annotations

from cli.stack import Stack  # on sys.path through conftest.py
from playwright.sync_api import Page, Route, expect


def test_the_api_docs_page_renders_every_endpoint_with_nothing_loaded_from_elsewhere(page: Page, stack: Stack) -> None:
    elsewhere: list[str] = []

    def offline(route: Route) -> None:  # as in an air-gapped cluster: only the registry answers
        if route.request.url.startswith(stack.web_url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    page.goto("/api/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("rok registry")
    expect(
        page.locator(".opblock-summary-path", has_text="/api/v1/namespaces/{namespace}/buckets").first
    ).to_be_visible()
    page.locator(".opblock-summary-path", has_text="/api/v1/namespaces/{namespace}/buckets").first.click()
    expect(page.locator(".opblock-body").first).to_contain_text("namespace")
    assert elsewhere == []


def test_fastapis_cdn_pages_are_gone(page: Page, stack: Stack) -> None:
    for path in ("/docs", "/redoc"):
        response = page.request.get(f"{stack.web_url}{path}")
        assert response.status == 404, path
    html = page.request.get(f"{stack.web_url}/api/docs").text()
    assert "https://" not in html and "http://" not in html  # every script and style by a path on this server
