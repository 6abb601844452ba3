"""Signing in and out, signing up, and how apps learn who is signed in: option A
(``GET /api/session`` with the forwarded cookie) and option B (``POST /auth/token``,
a short-lived HS256 JWT) (decision 17)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tokenbank.accounts import user_tokens
from tokenbank.accounts.errors import AccountExists, SignInRefused
from tokenbank.accounts.passwords import hash_password, validate_password
from tokenbank.accounts.service import SignedIn, normalize_email
from tokenbank.api.auth import ReadKey
from tokenbank.api.errors import ApiError
from tokenbank.api.responses import AUTHENTICATED, errors
from tokenbank.api.state import get_services
from tokenbank.api.views import iso_utc
from tokenbank.errors import InvalidInput
from tokenbank.web.auth import (
    SESSION_COOKIE,
    CsrfUser,
    accounts,
    check_pre_session_csrf,
    clear_session_cookie,
    current,
    pre_session_csrf,
    safe_next,
    set_pre_session_csrf,
    set_session_cookie,
)
from tokenbank.web.templating import page

logger = logging.getLogger("tokenbank.web")
# After a sign-up, whether or not the email was new (the page must not say which).
SIGNED_UP = (
    "Thanks for signing up. If this email was new, its account is ready: sign in with it."
    " If you already had an account, sign in with your password."
)
router = APIRouter(include_in_schema=False)
api_router = APIRouter(tags=["people"])


def _home(signed_in: SignedIn) -> str:
    return "/admin/tokens" if signed_in.is_admin and signed_in.user_id is None else "/tokens"


def _form_page(
    request: Request, name: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    token = pre_session_csrf(request)
    response = page(request, name, None, status_code=status_code, csrf_token=token, **context)
    set_pre_session_csrf(response, token, get_services(request).settings)
    return response


@router.get("/login")
async def login_form(
    request: Request, next: str | None = None, signed_up: str | None = None
) -> Response:
    signed_in = await current(request)
    if signed_in is not None:
        return RedirectResponse(safe_next(next, _home(signed_in)), status_code=303)
    notice = SIGNED_UP if signed_up is not None else None
    return _form_page(request, "login.html", next=safe_next(next, ""), email="", notice=notice)


@router.post("/login")
async def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1_024)] = "",
    next: Annotated[str, Form(max_length=2_048)] = "",
) -> Response:
    await check_pre_session_csrf(request)
    try:
        session = await accounts(request).sign_in(email, password)
    except SignInRefused as refused:
        return _form_page(
            request, "login.html", status_code=401, error=str(refused), next=next, email=email
        )
    response = RedirectResponse(safe_next(next, _home(session.signed_in)), status_code=303)
    set_session_cookie(response, session.token, get_services(request).settings)
    return response


@router.get("/signup")
async def signup_form(request: Request) -> Response:
    if not get_services(request).settings.signup_enabled:
        return page(
            request,
            "message.html",
            None,
            status_code=404,
            title="Sign-up is closed",
            message="Ask an admin for an account.",
        )
    return _form_page(request, "signup.html", email="")


@router.post("/signup")
async def signup(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1_024)] = "",
    confirm: Annotated[str, Form(max_length=1_024)] = "",
) -> Response:
    services = get_services(request)
    if not services.settings.signup_enabled:
        return page(
            request,
            "message.html",
            None,
            status_code=404,
            title="Sign-up is closed",
            message="Ask an admin for an account.",
        )
    await check_pre_session_csrf(request)
    try:
        if password != confirm:
            raise InvalidInput("confirm", "the two passwords differ")
        await _sign_up(request, email, password)
    except InvalidInput as refused:
        return _form_page(
            request, "signup.html", status_code=400, error=refused.message, email=email
        )
    # The same answer whether the email was new or taken, and no session either way:
    # signing in next is what proves the password (decision 17).
    return RedirectResponse("/login?signed_up=1", status_code=303)


async def _sign_up(request: Request, email: str, password: str) -> None:
    """A wallet (with its welcome bonus, once) and its account, unless the email is
    taken: then the password is hashed all the same, so that the two cases cost the
    same time and write nothing that tells them apart."""
    services = get_services(request)
    people = accounts(request)
    normalize_email(email)
    validate_password(password)
    if await people.email_taken(email):
        hash_password(password)
        return
    user_id = people.new_user_id()
    await services.tokens.open_wallet(user_id)
    try:
        await people.create(email, password, role="user", user_id=user_id)
    except AccountExists:
        # Two sign-ups raced for one email: this one's wallet stays unowned (its
        # welcome bonus is counted in the books, and nobody can spend it).
        logger.info("sign-up raced for an email; wallet %s left without an account", user_id)


@router.post("/logout")
async def logout(
    request: Request,
    signed_in: CsrfUser,
    everywhere: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    people = accounts(request)
    if everywhere:
        await people.end_every_session(signed_in.account_id)
    else:
        await people.end_session(request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(response, get_services(request).settings)
    return response


@router.post("/auth/token")
async def user_token(request: Request, signed_in: CsrfUser) -> dict[str, Any]:
    """Option B: an HS256 JWT for the signed-in user (``sub``, ``email``, ``exp``) that
    apps verify with the shared secret (tokenbank.client.verify_jwt)."""
    settings = get_services(request).settings
    key = user_tokens.usable_key(settings.jwt_secret)
    if key is None:
        raise ApiError(
            503,
            "user tokens are not configured: set TOKENBANK_JWT_SECRET",
            code="jwt_not_configured",
        )
    if signed_in.user_id is None:
        raise ApiError(400, "this account has no wallet to name", code="no_wallet")
    now = get_services(request).tokens.clock()
    lifetime = settings.user_jwt_ttl_seconds
    token = user_tokens.mint(
        key, signed_in.user_id, issued_at=now, lifetime_seconds=lifetime, email=signed_in.email
    )
    expires_at = now + timedelta(seconds=lifetime)
    return {"data": {"token": token, "tokenType": "Bearer", "expiresAt": iso_utc(expires_at)}}


@api_router.get(
    "/api/session",
    summary="Option A: who the forwarded session cookie belongs to",
    responses=errors(AUTHENTICATED, 401),
)
async def session_of_cookie(request: Request, principal: ReadKey) -> dict[str, Any]:
    signed_in = await current(request)
    if signed_in is None:
        raise ApiError(401, "no signed-in session in the forwarded cookie", code="no_session")
    return {
        "data": {
            "userId": signed_in.user_id,
            "email": signed_in.email,
            "roles": list(signed_in.roles),
            "expiresAt": iso_utc(signed_in.expires_at),
        }
    }
