"""The one place that maps exceptions to answers: domain errors know their status.

A route raises :class:`~tokenbank.api.errors.ApiError` or a domain error
(:mod:`tokenbank.errors`); these handlers turn each into the body of the dialect
the client speaks.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    allowed = []
    for method in ROUTABLE_METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(request, error.status_code, error.message, error.code, **error.extra)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, error: RequestValidationError) -> JSONResponse:
        refused = await access_refusal(request)
        if refused is not None:
            return await on_api_error(request, refused)
        message, details = describe_validation(error)
        return error_response(request, 422, message, "invalid_request", details=details)

    @app.exception_handler(InvalidInput)
    async def on_invalid(request: Request, error: InvalidInput) -> JSONResponse:
        return error_response(request, 400, str(error), "invalid_input", field=error.field)

    @app.exception_handler(IdempotencyConflict)
    async def on_conflict(request: Request, error: IdempotencyConflict) -> JSONResponse:
        return error_response(request, 409, str(error), "idempotency_conflict")

    @app.exception_handler(TokenBankError)
    async def on_domain(request: Request, error: TokenBankError) -> JSONResponse:
        return error_response(request, error.status_code, str(error))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = HTTP_ERROR_CODES.get(error.status_code, "http_error")
        response = error_response(request, error.status_code, str(error.detail), code)
        # Keep what the error carries, such as a 405's Allow header.
        for name, value in (error.headers or {}).items():
            response.headers[name] = value
        if error.status_code == 405:
            response.headers["Allow"] = ", ".join(allowed_methods(request))
        return response

    @app.exception_handler(OperationalError)
    async def on_database_down(request: Request, error: OperationalError) -> JSONResponse:
        logger.warning("database unavailable: %s", type(error.orig).__name__)
        return error_response(request, 503, DATABASE_UNAVAILABLE, "database_unavailable")

    @app.exception_handler(DBAPIError)
    async def on_database_error(request: Request, error: DBAPIError) -> JSONResponse:
        if error.connection_invalidated:
            return error_response(request, 503, DATABASE_UNAVAILABLE, "database_unavailable")
        logger.exception("database error")
        return error_response(request, 500, "Internal error", "internal_error")

    @app.exception_handler(OSError)
    async def on_os_error(request: Request, error: OSError) -> JSONResponse:
        # Connection refused or reset while talking to the database.
        logger.warning("database connection failed: %s", type(error).__name__)
        return error_response(request, 503, DATABASE_UNAVAILABLE, "database_unavailable")
