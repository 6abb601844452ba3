"""Every error answer, in the shape of the dialect the client speaks.

Dialect A (seed 000, ``/api/...``): ``{"error": message, "code": ..., ...}``.
Dialect B (seed 001, ``/api/token-process/...``):
``{"success": false, "status": code, "message": message}``.
Domain errors know their status; this module is the one place that maps them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tokenbank.errors import IdempotencyConflict, InvalidInput, TokenBankError

logger = logging.getLogger("tokenbank.api")

DIALECT_B_PREFIX = "/api/token-process"
DATABASE_UNAVAILABLE = "Database unavailable: try again shortly"
HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An answer other than 2xx, raised anywhere in a request."""

    def __init__(
        self, status_code: int, message: str, *, code: str | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.extra = extra


def is_dialect_b(path: str) -> bool:
    return path.startswith(DIALECT_B_PREFIX)


def error_body(
    path: str, status_code: int, message: str, code: str | None = None, **extra: Any
) -> dict[str, Any]:
    if is_dialect_b(path):
        body: dict[str, Any] = {"success": False, "status": status_code, "message": message}
    else:
        body = {"error": message}
    if code is not None:
        body["code"] = code
    body.update(extra)
    return body


def error_response(
    request: Request, status_code: int, message: str, code: str | None = None, **extra: Any
) -> JSONResponse:
    body = error_body(request.url.path, status_code, message, code, **extra)
    return JSONResponse(body, status_code=status_code)


def _describe_validation(error: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            reason = item.get("ctx", {}).get("error", "invalid JSON")
            details.append({"field": "body", "message": f"malformed JSON ({reason})"})
            continue
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        details.append({"field": location or "body", "message": item.get("msg", "invalid")})
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return f"Invalid request: {summary}", details


ROUTABLE_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


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
        from tokenbank.api.auth import access_refusal  # auth imports this module

        refused = await access_refusal(request)
        if refused is not None:
            return await on_api_error(request, refused)
        message, details = _describe_validation(error)
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
