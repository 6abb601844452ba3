"""Who is signed in, and what a page may do for them: the session cookie, the roles,
CSRF (decision 17).

Pages depend on ``PageUser`` (any signed-in person), ``PageAdmin`` (admin or
superadmin: sees) or ``PageSuperadmin`` (changes). A page's state-changing request
(every POST) also depends on ``csrf_checked``: the form field ``csrf_token`` or the
``X-CSRF-Token`` header must be the session's synchronizer token. The sign-in and
sign-up forms, before there is a session, use a double-submit cookie instead.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from tokenbank.accounts.service import AccountService, SignedIn
from tokenbank.api.state import get_services
from tokenbank.config import Settings

SESSION_COOKIE = "tb_session"
PRE_SESSION_CSRF_COOKIE = "tb_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class SignInRequired(Exception):
    """A page for signed-in people, opened by nobody: to /login, and back after."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PageRefused(Exception):
    """A page or form this person may not use (a role, or a missing CSRF token)."""

    def __init__(self, message: str, status_code: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def accounts(request: Request) -> AccountService:
    return get_services(request).accounts


# How often a long-lived answer (the live balance stream) asks whether its session
# still lives: a sign-out ends the stream within this.
SESSION_RECHECK_SECONDS = 5.0


def gone_or_signed_out(request: Request) -> Callable[[], Awaitable[bool]]:
    """For a stream: whether the client left, or (asked again every
    SESSION_RECHECK_SECONDS) its session ended (signed out, revoked, expired)."""
    token = request.cookies.get(SESSION_COOKIE)
    checked_at = time.monotonic()

    async def ended() -> bool:
        nonlocal checked_at
        if await request.is_disconnected():
            return True
        if time.monotonic() - checked_at < SESSION_RECHECK_SECONDS:
            return False
        checked_at = time.monotonic()
        return await accounts(request).session(token) is None

    return ended


async def current(request: Request) -> SignedIn | None:
    """The signed-in person of this request (looked up once per request)."""
    if not hasattr(request.state, "signed_in"):
        token = request.cookies.get(SESSION_COOKIE)
        request.state.signed_in = await accounts(request).session(token)
    found: SignedIn | None = request.state.signed_in
    return found


async def require_user(request: Request) -> SignedIn:
    signed_in = await current(request)
    if signed_in is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path)
    return signed_in


async def require_admin(signed_in: Annotated[SignedIn, Depends(require_user)]) -> SignedIn:
    if not signed_in.is_admin:
        raise PageRefused("This page is for admins.")
    return signed_in


async def require_superadmin(signed_in: Annotated[SignedIn, Depends(require_user)]) -> SignedIn:
    if not signed_in.is_superadmin:
        raise PageRefused("Only a superadmin can change this.")
    return signed_in


PageUser = Annotated[SignedIn, Depends(require_user)]
PageAdmin = Annotated[SignedIn, Depends(require_admin)]
PageSuperadmin = Annotated[SignedIn, Depends(require_superadmin)]


async def _presented_csrf(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def csrf_checked(request: Request, signed_in: PageUser) -> SignedIn:
    """The signed-in person, once the request carries their session's CSRF token."""
    presented = await _presented_csrf(request)
    if not presented or not secrets.compare_digest(presented, signed_in.csrf_token):
        raise PageRefused("This form has expired or did not come from tokenbank: reload it.")
    return signed_in


CsrfUser = Annotated[SignedIn, Depends(csrf_checked)]


def pre_session_csrf(request: Request) -> str:
    """The sign-in form's token: the cookie's, or a new one (set it with
    ``set_pre_session_csrf``)."""
    existing = request.cookies.get(PRE_SESSION_CSRF_COOKIE)
    return existing if existing and len(existing) <= 64 else secrets.token_urlsafe(32)


async def check_pre_session_csrf(request: Request) -> None:
    cookie = request.cookies.get(PRE_SESSION_CSRF_COOKIE) or ""
    presented = await _presented_csrf(request)
    if not cookie or not presented or not secrets.compare_digest(cookie, presented):
        raise PageRefused("This form has expired or did not come from tokenbank: reload it.")


def set_pre_session_csrf(response: Response, token: str, settings: Settings) -> None:
    response.set_cookie(
        PRE_SESSION_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        max_age=3_600,
    )


def set_session_cookie(response: Response, token: str, settings: Settings) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        domain=settings.cookie_domain,
        max_age=settings.session_ttl_hours * 3_600,
    )
    response.delete_cookie(PRE_SESSION_CSRF_COOKIE)


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        domain=settings.cookie_domain,
        secure=settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )


def safe_next(value: str | None, default: str) -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return default
