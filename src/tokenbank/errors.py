"""The exceptions every domain of tokenbank raises on purpose.

Bad input is an exception: the call was wrong and nothing was written. Each class
knows its HTTP status, and one handler (:mod:`tokenbank.api.errors`) maps them to
answers. Business refusals of the ledger are results, not exceptions
(:mod:`tokenbank.ledger.errors`).

    TokenBankError
    ├── InvalidInput          bad amount, unknown operation type, over-long string (400)
    ├── IdempotencyConflict   a key reused with a different request (409)
    ├── NotFound              the base of each domain's "no such thing" (404)
    └── Conflict              the base of each domain's "clashes with what exists" (409)
"""

from __future__ import annotations

IDEMPOTENCY_CONFLICT_MESSAGE = "Idempotency key was already used with a different request"


class TokenBankError(Exception):
    """Base of every exception tokenbank raises on purpose."""

    status_code = 500


class InvalidInput(TokenBankError, ValueError):
    """The request itself is wrong; nothing was written."""

    status_code = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class IdempotencyConflict(TokenBankError):
    """The idempotency key was first used with a different request."""

    status_code = 409

    def __init__(self, idempotency_key: str) -> None:
        super().__init__(IDEMPOTENCY_CONFLICT_MESSAGE)
        self.idempotency_key = idempotency_key


class NotFound(TokenBankError):
    """Something the request names does not exist; each domain says what."""

    status_code = 404


class Conflict(TokenBankError):
    """The request clashes with what exists; each domain says how."""

    status_code = 409
