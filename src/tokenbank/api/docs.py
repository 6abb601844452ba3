"""The interactive API documentation at ``/docs``, served entirely by tokenbank.

Swagger UI's script and style come from the ``fastapi-swagger`` package (installed with
tokenbank, nothing kept in this repository) and are served under ``/docs/assets``, so
the page works where nothing but tokenbank is reachable.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
SWAGGER_UI_PARAMETERS = {"persistAuthorization": True, "displayRequestDuration": True}


def install_docs(app: FastAPI) -> None:
    assets = str(files("fastapi_swagger.resources"))
    app.mount(ASSETS_PATH, StaticFiles(directory=assets), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
