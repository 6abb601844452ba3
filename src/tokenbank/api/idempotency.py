"""The idempotency key of a request: the body's referenceId, or Idempotency-Key."""

from __future__ import annotations

from fastapi import Request

from tokenbank.api.errors import ApiError
from tokenbank.config import MAX_IDEMPOTENCY_KEY_LENGTH

IDEMPOTENCY_HEADER = "idempotency-key"


def idempotency_key(request: Request, from_body: str | None) -> str | None:
    header = request.headers.get(IDEMPOTENCY_HEADER)
    if header is not None:
        if not header.strip() or len(header) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ApiError(
                400,
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
                code="invalid_input",
            )
        if from_body is not None and from_body != header:
            raise ApiError(
                400,
                "referenceId and Idempotency-Key differ: send one, or the same value",
                code="invalid_input",
            )
    return from_body if from_body is not None else header
