"""The error answers of every route, documented for the OpenAPI document.

These models describe the wire format that :mod:`tokenbank.api.errors` writes; they
are documentation only (the handlers build the bodies), so that the schema tells
clients and fuzzers the truth about each status a route may answer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Dialect = Literal["A", "B"]


class ErrorDetail(BaseModel):
    field: str = Field(description="the field, parameter or body part at fault")
    message: str


class ErrorBody(BaseModel):
    """Token Service dialect: ``{"error": message, "code": ..., ...}``."""

    model_config = ConfigDict(extra="allow", title="Error")

    error: str = Field(description="a human-readable message")
    code: str | None = Field(
        default=None, description="a stable machine-readable code, e.g. insufficient_tokens"
    )
    details: list[ErrorDetail] | None = Field(default=None, description="422: what was wrong")
    field: str | None = Field(default=None, description="400 invalid_input: the field at fault")
    available: int | None = Field(default=None, description="402: the available balance")
    required: int | None = Field(default=None, description="402: what the call needed")
    buyTokensUrl: str | None = Field(  # noqa: N815 - the wire contract's name
        default=None, description="402: where the user can buy tokens"
    )
    retryAfterSeconds: int | None = Field(  # noqa: N815
        default=None, description="429: seconds until the key may call again"
    )


class ErrorBodyB(BaseModel):
    """Token Process dialect: ``{"success": false, "status": code, "message": ...}``."""

    model_config = ConfigDict(extra="allow", title="ErrorB")

    success: Literal[False]
    status: int = Field(description="the HTTP status, repeated")
    message: str
    code: str | None = Field(default=None, description="a stable machine-readable code")
    details: list[ErrorDetail] | None = Field(default=None, description="422: what was wrong")


class HealthBody(BaseModel):
    status: Literal["ok", "unavailable"]
    database: str = Field(description='"ok", or the kind of failure')


DESCRIPTIONS: dict[int, str] = {
    400: "Bad input the schema cannot express (code invalid_input)",
    401: "Missing or invalid API key (code unauthorized)",
    402: "Insufficient tokens (code insufficient_tokens, with available and required), or"
    " the API key's daily spend cap would be exceeded (code daily_spend_cap_exceeded)",
    403: "The key lacks the scope (code forbidden), or the wallet is suspended or closed",
    404: "Not found",
    409: "Conflict: an idempotency key reused for a different request, or a state clash",
    413: "Request body too large (code payload_too_large)",
    415: "Content-Type must be application/json (code unsupported_media_type)",
    429: "The API key's request rate limit is reached (code rate_limited, with"
    " retryAfterSeconds; header Retry-After)",
    422: "Invalid request: malformed JSON, a missing or ill-typed field or parameter"
    " (code invalid_request, with details)",
    502: "Stripe refused or could not be reached (code payment_provider_error)",
    503: "Database unavailable: try again shortly (code database_unavailable); on payment"
    " routes, Stripe keys not configured (code payments_not_configured)",
}

# Every route that takes a key: a refused key, a key over its rate, or the database
# out of reach.
AUTHENTICATED = (401, 403, 429, 503)
# Every route with parameters or a body.
WITH_INPUT = (400, 422)
# Every route with a JSON body: the request limits apply.
WITH_BODY = (400, 413, 415, 422)


def errors(
    *statuses: int | tuple[int, ...],
    dialect: Dialect = "A",
    notes: dict[int, str] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or router: each status with its error model."""
    flat: list[int] = []
    for status in statuses:
        flat.extend(status if isinstance(status, tuple) else (status,))
    model = ErrorBodyB if dialect == "B" else ErrorBody
    notes = notes or {}
    return {
        status: {"model": model, "description": notes.get(status, DESCRIPTIONS[status])}
        for status in sorted(set(flat))
    }
