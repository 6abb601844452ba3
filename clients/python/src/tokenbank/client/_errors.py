"""The SDK's exceptions, and how an answer of the token service becomes one.

Our exception hierarchy::

    TokenServiceError             any failure of a call (status_code, available, required)
    ├── InsufficientTokensError   402, or a token process start answered not-access-able
    ├── UnauthorizedError         401: the API key is missing or wrong
    ├── ForbiddenError            403: the key lacks a scope, the feature is not in the
    │                             user's plan, or the wallet is suspended or closed
    ├── NotFoundError             404: no such wallet, hold, feature or ledger entry
    ├── ConflictError             409: an idempotency key reused for a different request,
    │                             a hold no longer pending, a refund above what was spent
    ├── InvalidRequestError       400, 413, 422: the request itself is malformed
    ├── RateLimitedError          429: the app's key is over its request rate
    │                             (``retry_after_seconds`` says when it frees)
    ├── SpendCapExceededError     402 ``daily_spend_cap_exceeded``: the app's key reached
    │                             its daily spend cap (not the user's tokens)
    └── UnavailableError          502, 503, 504, or no answer at all (after the retries)

    InvalidTokenError (ValueError)  a user's JWT failed verification (no call is made)

Any other status (a 500, say) raises ``TokenServiceError`` itself. Every error keeps
the service's message, its ``code`` (``insufficient_tokens``, ...) when it sent one,
and the parsed body.
"""

from __future__ import annotations

from typing import Any

INSUFFICIENT_TOKENS_STATUS = 402
SPEND_CAP_CODE = "daily_spend_cap_exceeded"


class TokenServiceError(Exception):
    """A call to the token service failed. the Token Service dialect's ``TokenServiceError``."""

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        *,
        available: int | None = None,
        required: int | None = None,
        code: str | None = None,
        buy_tokens_url: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.available = available
        self.required = required
        self.code = code
        self.buy_tokens_url = buy_tokens_url
        self.body = body

    @property
    def is_insufficient_tokens(self) -> bool:
        # A 402 for the key's daily spend cap is not about the user's tokens.
        return self.status_code == INSUFFICIENT_TOKENS_STATUS and self.code != SPEND_CAP_CODE

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status_code={self.status_code})"


class InsufficientTokensError(TokenServiceError):
    """The user has too few tokens (HTTP 402, or a start answered not-access-able)."""


class UnauthorizedError(TokenServiceError):
    """HTTP 401: the app's API key is missing or wrong."""


class ForbiddenError(TokenServiceError):
    """HTTP 403: not allowed (key scope, feature not in plan, suspended or closed wallet)."""


class NotFoundError(TokenServiceError):
    """HTTP 404: no such wallet, hold, feature or ledger entry."""


class ConflictError(TokenServiceError):
    """HTTP 409: the request conflicts with an earlier one or with the state of a hold."""


class InvalidRequestError(TokenServiceError):
    """HTTP 400, 413 or 422: the service refused the request as malformed."""


class RateLimitedError(TokenServiceError):
    """HTTP 429: the app's API key made more requests than its rate limit allows."""

    retry_after_seconds: int | None = None


class SpendCapExceededError(TokenServiceError):
    """HTTP 402 ``daily_spend_cap_exceeded``: the app's API key reached its daily spend
    cap; buying tokens would not help (the cap frees at midnight UTC)."""


class UnavailableError(TokenServiceError):
    """The service did not answer, or answered 502/503/504, on every attempt."""


class InvalidTokenError(ValueError):
    """A user's JWT is malformed, badly signed, expired, not yet valid or has no ``sub``."""


ERRORS_BY_STATUS: dict[int, type[TokenServiceError]] = {
    400: InvalidRequestError,
    401: UnauthorizedError,
    402: InsufficientTokensError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequestError,
    415: InvalidRequestError,
    422: InvalidRequestError,
    429: RateLimitedError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
}

MAX_MESSAGE_CHARACTERS = 500


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def error_from_answer(status_code: int, body: Any, text: str) -> TokenServiceError:
    """The exception for a non-2xx answer, in either dialect.

    Dialect A errors are ``{"error": message, "code", "available", "required",
    "buyTokensUrl"}``; dialect B errors ``{"success": false, "status", "message"}``. A
    body that is not JSON (a proxy's HTML page) is cut short and used as the message.
    """
    fields = body if isinstance(body, dict) else {}
    message = (
        _text(fields.get("error"))
        or _text(fields.get("message"))
        or text.strip()[:MAX_MESSAGE_CHARACTERS]
        or f"Token service answered HTTP {status_code}"
    )
    code = _text(fields.get("code"))
    error_class = ERRORS_BY_STATUS.get(status_code, TokenServiceError)
    if status_code == INSUFFICIENT_TOKENS_STATUS and code == SPEND_CAP_CODE:
        error_class = SpendCapExceededError
    error = error_class(
        message,
        status_code,
        available=_integer(fields.get("available")),
        required=_integer(fields.get("required")),
        code=code,
        buy_tokens_url=_text(fields.get("buyTokensUrl")),
        body=body,
    )
    if isinstance(error, RateLimitedError):
        error.retry_after_seconds = _integer(fields.get("retryAfterSeconds"))
    return error
