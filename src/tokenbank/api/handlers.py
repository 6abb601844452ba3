"""The one place that maps exceptions to answers: domain errors know their status.

A route raises :class:`~tokenbank.api.errors.ApiError` or a domain error
(:mod:`tokenbank.errors`); these handlers turn each into the body of the dialect
the client speaks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tokenbank.api.auth import access_refusal
from tokenbank.api.errors import (
    DATABASE_UNAVAILABLE,
    HTTP_ERROR_CODES,
    ROUTABLE_METHODS,
    ApiError,
    describe_validation,
    error_response,
    logger,
)
from tokenbank.errors import IdempotencyConflict, InvalidInput, TokenBankError
from tokenbank.logs import REQUEST_ID_HEADER, REQUEST_ID_STATE


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    allowed = []
    for method in ROUTABLE_METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def on_api_error(request: Request, error: ApiError) -> JSONResponse:
    response = error_response(request, error.status_code, error.message, error.code, **error.extra)
    response.headers.update(error.headers)
    return response


async def on_validation(request: Request, error: RequestValidationError) -> JSONResponse:
    # A caller without a valid key hears 401/403, not what is wrong with its body.
    refused = await access_refusal(request)
    if refused is not None:
        return await on_api_error(request, refused)
    message, details = describe_validation(error)
    return error_response(request, 422, message, "invalid_request", details=details)


async def on_invalid(request: Request, error: InvalidInput) -> JSONResponse:
    return error_response(request, 400, str(error), "invalid_input", field=error.field)


async def on_conflict(request: Request, error: IdempotencyConflict) -> JSONResponse:
    return error_response(request, 409, str(error), "idempotency_conflict")


async def on_domain(request: Request, error: TokenBankError) -> JSONResponse:
    # A domain error may name its code (payments' do); the others answer without one.
    code: str | None = getattr(error, "code", None)
    return error_response(request, error.status_code, str(error), code)


async def on_http(request: Request, error: StarletteHTTPException) -> JSONResponse:
    code = HTTP_ERROR_CODES.get(error.status_code, "http_error")
    response = error_response(request, error.status_code, str(error.detail), code)
    # Keep what the error carries, such as a 405's Allow header.
    for name, value in (error.headers or {}).items():
        response.headers[name] = value
    if error.status_code == 405:
        response.headers["Allow"] = ", ".join(allowed_methods(request))
    return response


async def on_database_down(request: Request, error: OperationalError) -> JSONResponse:
    logger.warning("database unavailable: %s", type(error.orig).__name__)
    return error_response(request, 503, DATABASE_UNAVAILABLE, "database_unavailable")


async def on_database_error(request: Request, error: DBAPIError) -> JSONResponse:
    if error.connection_invalidated:
        return error_response(request, 503, DATABASE_UNAVAILABLE, "database_unavailable")
    logger.exception("database error")
    return error_response(request, 500, "Internal error", "internal_error")


async def on_os_error(request: Request, error: OSError) -> JSONResponse:
    # Connection refused or reset while talking to the database.
    logger.warning("database connection failed: %s", type(error).__name__)
    return error_response(request, 503, DATABASE_UNAVAILABLE, "database_unavailable")


async def on_unexpected(request: Request, error: Exception) -> Response:
    """An error nothing else answers: 500, with the request's id, so that the answer a
    client reports can be found in the logs. The server error middleware, outside the
    request id's, sends it and then raises the error on (the server logs the traceback)."""
    request_id = request.scope.get("state", {}).get(REQUEST_ID_STATE)
    logger.error("unhandled %s: answered 500 (request id %s)", type(error).__name__, request_id)
    response: Response
    if request.url.path.startswith("/api/"):
        response = error_response(request, 500, "Internal error", "internal_error")
    else:  # a page: the plain answer Starlette gives
        response = PlainTextResponse("Internal Server Error", status_code=500)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


# Each exception class and its handler; Starlette picks the most specific class.
HANDLERS: tuple[tuple[type[Exception], Callable[..., Awaitable[Response]]], ...] = (
    (ApiError, on_api_error),
    (RequestValidationError, on_validation),
    (InvalidInput, on_invalid),
    (IdempotencyConflict, on_conflict),
    (TokenBankError, on_domain),
    (StarletteHTTPException, on_http),
    (OperationalError, on_database_down),
    (DBAPIError, on_database_error),
    (OSError, on_os_error),
    # Starlette gives this one to its server error middleware, the outermost.
    (Exception, on_unexpected),
)


def install_error_handlers(app: FastAPI) -> None:
    for exception_class, handler in HANDLERS:
        app.add_exception_handler(exception_class, handler)
