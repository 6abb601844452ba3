"""Errors of accounts; each knows its HTTP status.

TokenBankError
├── SignInRefused     wrong email or password, or locked for a while: one answer (401)
├── NotFound (404)
│   └── AccountNotFound
└── Conflict (409)
    └── AccountExists
"""

from __future__ import annotations

from tokenbank.errors import Conflict, NotFound, TokenBankError

# One message for every refusal, so that no answer tells a known email from another.
SIGN_IN_REFUSED = "Sign-in failed: check the email and password, or try again later."


class SignInRefused(TokenBankError):
    status_code = 401
    code = "sign_in_refused"

    def __init__(self) -> None:
        super().__init__(SIGN_IN_REFUSED)


class AccountNotFound(NotFound):
    code = "account_not_found"


class AccountExists(Conflict):
    code = "account_exists"
