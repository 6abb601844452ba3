"""Jinja2 pages: one layout, autoescaped, with the signed-in person and CSRF token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from tokenbank.accounts.service import SignedIn

WEB_ROOT = Path(__file__).parent
templates = Jinja2Templates(directory=WEB_ROOT / "templates")


def tokens_text(value: int | None) -> str:
    """12345 -> "12,345" (pages show tokens grouped)."""
    return "-" if value is None else f"{value:,}"


def cents_text(cents: int | None, currency: str = "usd") -> str:
    if cents is None:
        return "-"
    symbol = "$" if currency == "usd" else f"{currency.upper()} "
    return f"{symbol}{cents // 100:,}.{cents % 100:02d}"


templates.env.filters["tokens"] = tokens_text
templates.env.filters["cents"] = cents_text


def page(
    request: Request,
    name: str,
    signed_in: SignedIn | None,
    *,
    status_code: int = 200,
    csrf_token: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a page of the layout; forms carry ``csrf_token`` (the session's, or the
    pre-session cookie's on the sign-in and sign-up forms)."""
    token = csrf_token or (signed_in.csrf_token if signed_in is not None else "")
    response: HTMLResponse = templates.TemplateResponse(
        request,
        name,
        {"signed_in": signed_in, "csrf_token": token, **context},
        status_code=status_code,
    )
    # Pages carry per-session tokens and balances: never cached, never framed.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
