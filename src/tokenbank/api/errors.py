"""Every error answer, in the shape of the dialect the client speaks.

Token Service dialect (``/api/...``): ``{"error": message, "code": ..., ...}``.
Token Process dialect (``/api/token-process/...``):
``{"success": false, "status": code, "message": message}``
(docs/compatibility.md). :mod:`tokenbank.api.handlers` maps exceptions to these.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.headers = headers or {}  # such as a 429's Retry-After
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


def describe_validation(error: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
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
