"""The balance widget (the billing defaults' TokenBalance) for apps' own pages.

``/static/widget.js`` defines ``<tokenbank-balance>``; it asks ``GET /api/widget/balance``
for the signed-in user's balance, with the option A session cookie (credentials
included; subdomains of one site share it) or an option B JWT
(``Authorization: Bearer``). Browsers get an answer only from an origin some app
registered (``tokenbank apps add-origin``): CORS with credentials, the origin echoed,
never ``*`` (decision 17).
"""

from __future__ import annotations

from typing import Any

import jwt
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from tokenbank.api.state import get_services
from tokenbank.web.auth import current

router = APIRouter(include_in_schema=False)

ALLOWED_HEADERS = "Authorization"


async def _allowed_origin(request: Request) -> str | None:
    origin = request.headers.get("origin")
    if origin is None:
        return None
    return origin if await get_services(request).apps.origin_allowed(origin) else None


def _cors(response: Response, origin: str | None) -> Response:
    response.headers["Vary"] = "Origin"
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
    return response


def _jwt_user(request: Request) -> str | None:
    """The user of an option B token, when it verifies."""
    header = request.headers.get("authorization", "")
    secret = get_services(request).settings.jwt_secret
    if not header.lower().startswith("bearer ") or secret is None:
        return None
    try:
        # The expiry is checked against tokenbank's clock (the one that minted it).
        claims = jwt.decode(
            header[7:].strip(),
            secret.get_secret_value(),
            algorithms=["HS256"],
            options={"require": ["exp", "sub"], "verify_exp": False},
        )
    except jwt.PyJWTError:
        return None
    now = get_services(request).tokens.clock().timestamp()
    subject, expires = claims.get("sub"), claims.get("exp")
    if not isinstance(subject, str) or not isinstance(expires, int | float) or expires <= now:
        return None
    return subject


async def _user_id(request: Request) -> str | None:
    signed_in = await current(request)
    if signed_in is not None and signed_in.user_id is not None:
        return signed_in.user_id
    return _jwt_user(request)


@router.options("/api/widget/balance")
async def widget_preflight(request: Request) -> Response:
    origin = await _allowed_origin(request)
    response = Response(status_code=204 if origin else 403)
    if origin is not None:
        response.headers["Access-Control-Allow-Methods"] = "GET"
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    return _cors(response, origin)


@router.get("/api/widget/balance")
async def widget_balance(request: Request) -> Response:
    origin = await _allowed_origin(request)
    if request.headers.get("origin") is not None and origin is None:
        return _cors(JSONResponse({"error": "origin not registered"}, status_code=403), None)
    user_id = await _user_id(request)
    balance = await get_services(request).tokens.get_balance(user_id) if user_id else None
    if balance is None:
        body: dict[str, Any] = {"error": "not signed in", "code": "unauthorized"}
        return _cors(JSONResponse(body, status_code=401), origin)
    settings = get_services(request).settings
    data = {
        "balance": balance.tokens_balance,
        "available": balance.available,
        "low": balance.available < settings.low_balance_tokens,
        "buyTokensUrl": f"{settings.public_url.rstrip('/')}/tokens",
    }
    response = JSONResponse({"data": data})
    response.headers["Cache-Control"] = "no-store"
    return _cors(response, origin)
