"""The API's documentation page at ``/api/docs``, served whole from this package: no CDN, so it works offline
and in air-gapped clusters.

FastAPI's own ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from a CDN; the app turns them off and this
module serves Swagger UI 5 from the ``swagger-ui-bundle-v2`` package (import name ``swagger_ui_bundle``,
Apache-2.0) instead, rendering ``/api/openapi.json``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_URL = "/api/docs"
ASSETS_URL = "/api/docs/assets"


def add_api_docs(app: FastAPI, *, openapi_url: str) -> None:
    """Serve the Swagger UI page of ``openapi_url`` at :data:`DOCS_URL`, its scripts and styles beside it."""
    app.mount(ASSETS_URL, StaticFiles(directory=Path(str(swagger_ui_path))), name="api-docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
            oauth2_redirect_url=None,
            # no badge from the public validator service: nothing on the page leaves this server
            swagger_ui_parameters={"validatorUrl": None},
        )
