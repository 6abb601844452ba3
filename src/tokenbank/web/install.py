"""Putting the pages into the app: their routers, their static files, and the answers
for "sign in first" (a redirect) and "not for you" (a page, not JSON)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from tokenbank.web import routes_admin, routes_auth, routes_tokens, routes_widget
from tokenbank.web.auth import PageRefused, SignInRequired, current
from tokenbank.web.templating import WEB_ROOT, page

STATIC_PATH = "/static"


async def _sign_in_first(request: Request, error: Exception) -> Response:
    assert isinstance(error, SignInRequired)
    return RedirectResponse(f"/login?next={quote(error.next_path, safe='/')}", status_code=303)


async def _refused(request: Request, error: Exception) -> Response:
    assert isinstance(error, PageRefused)
    signed_in = await current(request)
    return page(
        request,
        "message.html",
        signed_in,
        status_code=error.status_code,
        title="Not allowed",
        message=error.message,
    )


def install_pages(app: FastAPI) -> None:
    app.include_router(routes_tokens.router)  # before /static: it serves /static/vendor/
    app.mount(STATIC_PATH, StaticFiles(directory=WEB_ROOT / "static"), name="static")
    app.add_exception_handler(SignInRequired, _sign_in_first)
    app.add_exception_handler(PageRefused, _refused)
    app.include_router(routes_admin.router)
    for router in (routes_auth.router, routes_auth.api_router, routes_widget.router):
        app.include_router(router)
