"""API key authentication, scopes and per-key limits, for both dialects' headers.

Both ``Authorization: Bearer <key>`` and ``x-server-api-key: <key>`` work on every
endpoint. A missing or wrong key is a 401, a key without the scope a 403, a key over
its request rate a 429 with ``Retry-After`` (issue 14; keys without a rate limit pay
nothing for it). A key's daily spend cap goes with its spends as a
:class:`~tokenbank.ledger.operations.SpendCap` (:func:`spend_cap_of`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from tokenbank.api.errors import ApiError, is_dialect_b
from tokenbank.api.state import get_services
from tokenbank.apps.keys import keys_match
from tokenbank.apps.service import Principal
from tokenbank.ledger.operations import SpendCap

SERVER_API_KEY_HEADER = "x-server-api-key"

# Declared for the OpenAPI document (and /docs' Authorize button); checked below.
bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")
header_scheme = APIKeyHeader(
    name=SERVER_API_KEY_HEADER, auto_error=False, description="x-server-api-key: <api key>"
)


def _unauthorized(request: Request, missing: bool) -> ApiError:
    if is_dialect_b(request.url.path):
        message = "Missing server API key" if missing else "Invalid server API key"
    else:
        message = "Missing API key" if missing else "Invalid API key"
    return ApiError(401, message, code="unauthorized")


REQUIRED_SCOPE_ATTRIBUTE = "tokenbank_required_scope"


async def authenticate(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    server_key: Annotated[str | None, Security(header_scheme)],
) -> Principal:
    presented = bearer.credentials if bearer is not None else server_key
    return await authenticate_presented(request, presented)


async def authenticate_presented(request: Request, presented: str | None) -> Principal:
    """The key's principal (401 without one), counted against the key's rate (429)."""
    principal = await principal_for(request, presented)
    if principal.rate_limit_per_minute is not None:
        await _admit(request, principal, principal.rate_limit_per_minute)
    return principal


async def _admit(request: Request, principal: Principal, limit: int) -> None:
    """Count the request against its key's rate; over it, a 429 before anything runs."""
    limiter = get_services(request).rate_limiter
    if limiter is None or principal.key_id is None:
        return
    retry_after_seconds = await limiter.admit(principal.key_id, limit)
    if retry_after_seconds is not None:
        raise ApiError(
            429,
            f"Rate limit of this API key reached ({limit} requests per minute)",
            code="rate_limited",
            headers={"Retry-After": str(retry_after_seconds)},
            retryAfterSeconds=retry_after_seconds,
        )


def spend_cap_of(principal: Principal) -> SpendCap | None:
    """The key's daily spend cap, for the ledger to judge with each spend."""
    if principal.daily_spend_cap_tokens is None or principal.key_id is None:
        return None
    return SpendCap(key_id=principal.key_id, cap_tokens=principal.daily_spend_cap_tokens)


async def principal_for(request: Request, presented: str | None) -> Principal:
    if not presented:
        raise _unauthorized(request, missing=True)
    services = get_services(request)
    env_key = services.settings.api_key
    env_principal = services.env_principal
    if (
        env_key is not None
        and env_principal is not None
        and keys_match(presented, env_key.get_secret_value())
    ):
        return env_principal
    principal = await services.apps.authenticate(presented)
    if principal is None:
        raise _unauthorized(request, missing=False)
    return principal


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        check_scope(principal, scope)
        return principal

    setattr(check, REQUIRED_SCOPE_ATTRIBUTE, scope)
    return check


def check_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise ApiError(403, f"API key lacks the '{scope}' scope", code="forbidden")


def presented_key(request: Request) -> str | None:
    """The key as the two security schemes above read it: a Bearer credential, else
    the x-server-api-key header (the first of each, as ``request.headers`` reads
    them, but off the raw list: building those headers is a cost on every request)."""
    authorization: bytes | None = None
    server_key: bytes | None = None
    for name, value in request.scope["headers"]:
        if name == _AUTHORIZATION and authorization is None:
            authorization = value
        elif name == _SERVER_API_KEY and server_key is None:
            server_key = value
    if authorization is not None:
        scheme, _, credentials = authorization.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return None if server_key is None else server_key.decode("latin-1")


_AUTHORIZATION = b"authorization"
_SERVER_API_KEY = SERVER_API_KEY_HEADER.encode("latin-1")


def _route_access(dependant: Dependant) -> tuple[bool, list[str]]:
    """Whether a route needs a key, and which scopes, from its dependency tree."""
    needs_key = False
    scopes: list[str] = []
    for dependency in dependant.dependencies:
        if dependency.call is authenticate:
            needs_key = True
        scope = getattr(dependency.call, REQUIRED_SCOPE_ATTRIBUTE, None)
        if scope is not None:
            scopes.append(scope)
        nested_needs_key, nested_scopes = _route_access(dependency)
        needs_key = needs_key or nested_needs_key
        scopes.extend(nested_scopes)
    return needs_key, scopes


async def access_refusal(request: Request) -> ApiError | None:
    """The 401 or 403 a request deserves, checked before its body is judged.

    FastAPI decodes a JSON body before it runs dependencies, so a malformed body
    would otherwise answer 422 to a caller who has not even shown a key.
    """
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if not isinstance(dependant, Dependant):
        return None
    needs_key, scopes = _route_access(dependant)
    if not needs_key:
        return None
    try:
        principal = await principal_for(request, presented_key(request))
        for scope in scopes:
            check_scope(principal, scope)
    except ApiError as refusal:
        return refusal
    return None


ReadKey = Annotated[Principal, Depends(require_scope("read"))]
SpendKey = Annotated[Principal, Depends(require_scope("spend"))]
RefundKey = Annotated[Principal, Depends(require_scope("refund"))]
CreditKey = Annotated[Principal, Depends(require_scope("credit"))]
PaymentsKey = Annotated[Principal, Depends(require_scope("payments"))]
AdminKey = Annotated[Principal, Depends(require_scope("admin"))]
AnyKey = Annotated[Principal, Depends(authenticate)]
