"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) with their scripts, styles and icon served by the app itself, from
the fastapi-offline package: FastAPI's pages load them from a CDN, and a coordinator is often where there is none.
No token, like ``/openapi.json`` they read."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def install(app: FastAPI) -> None:
    """The pages and their assets; the app must be made with ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")
    app.add_route("/docs", _page(app, _swagger), include_in_schema=False)
    app.add_route("/redoc", _page(app, _redoc), include_in_schema=False)

    async def oauth2_redirect(_request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_route(app.swagger_ui_oauth2_redirect_url, oauth2_redirect, include_in_schema=False)


def _page(app: FastAPI, render: Callable[[FastAPI, str], HTMLResponse]):
    async def page(request: Request) -> HTMLResponse:
        return render(app, request.scope.get("root_path", ""))  # behind a proxy's prefix, links keep it

    return page


def _swagger(app: FastAPI, root: str) -> HTMLResponse:
    return get_swagger_ui_html(
        **_document(app, root, "Swagger UI"),
        oauth2_redirect_url=f"{root}{app.swagger_ui_oauth2_redirect_url}",
        swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
        swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},  # no online validator
    )


def _redoc(app: FastAPI, root: str) -> HTMLResponse:
    assets = {"redoc_js_url": f"{root}{ASSETS}/redoc.standalone.js", "redoc_favicon_url": f"{root}{ASSETS}/favicon.png"}
    return get_redoc_html(**_document(app, root, "ReDoc"), **assets, with_google_fonts=False)


def _document(app: FastAPI, root: str, viewer: str) -> dict[str, str]:
    return {"openapi_url": f"{root}{app.openapi_url}", "title": f"{app.title} - {viewer}"}
