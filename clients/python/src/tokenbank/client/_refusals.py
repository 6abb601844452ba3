"""What an app tells its own user when the token service refuses or fails.

Shared by the FastAPI and ASGI integrations, so both answer alike:

- too few tokens: 402 ``{"error": "Insufficient tokens", "required", "available",
  "buyTokensUrl"}`` (the Token Service dialect's ``requireTokens`` answer);
- no wallet: 404; a suspended or closed wallet, or a feature not in the user's plan:
  403, each with the service's message;
- the app's key over its request rate or its daily spend cap: 429 (the user can only
  wait; the app's operator set the limit);
- the service unreachable: 503;
- anything else (a wrong API key, a key without the scope, a malformed request) is
  the app's own misconfiguration, not the user's business: 502 with a generic message,
  and the details go to the log.
"""

from __future__ import annotations

import logging
from typing import Any

from tokenbank.client._errors import (
    ForbiddenError,
    InsufficientTokensError,
    NotFoundError,
    RateLimitedError,
    SpendCapExceededError,
    TokenServiceError,
    UnavailableError,
)

logger = logging.getLogger("tokenbank.client")

INSUFFICIENT_TOKENS = "Insufficient tokens"
UNAVAILABLE = "Token service unavailable: try again shortly"
SERVICE_ERROR = "Token service error"
UNAUTHORIZED = "Unauthorized"
# The app's key's own limits (the service's 429 and its daily spend cap's 402).
APP_LIMIT_MESSAGES: dict[type[TokenServiceError], str] = {
    RateLimitedError: "Too many requests: try again shortly",
    SpendCapExceededError: "Today's spending limit is reached: try again tomorrow",
}
# 403 codes that are about the app's key, not about the user.
APP_KEY_CODES = frozenset({"forbidden", "unauthorized"})


def insufficient_body(error: TokenServiceError, buy_tokens_url: str) -> dict[str, Any]:
    return {
        "error": INSUFFICIENT_TOKENS,
        "required": error.required,
        "available": error.available,
        "buyTokensUrl": error.buy_tokens_url or buy_tokens_url,
    }


def refusal_answer(error: TokenServiceError, *, buy_tokens_url: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body an app answers its user with, for ``error``."""
    if isinstance(error, InsufficientTokensError):
        return 402, insufficient_body(error, buy_tokens_url)
    if isinstance(error, RateLimitedError | SpendCapExceededError):
        return 429, {"error": APP_LIMIT_MESSAGES[type(error)]}
    if isinstance(error, NotFoundError):
        return 404, {"error": error.message}
    if isinstance(error, ForbiddenError) and error.code not in APP_KEY_CODES:
        return 403, {"error": error.message}
    if isinstance(error, UnavailableError):
        return 503, {"error": UNAVAILABLE}
    logger.error(
        "token service refused the app's request (HTTP %s, %s): %s",
        error.status_code,
        error.code,
        error.message,
    )
    return 502, {"error": SERVICE_ERROR}
