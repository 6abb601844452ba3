"""Errors of the token process; each knows its HTTP status.

    TokenBankError
    ├── NotFound (404)
    │   └── HoldNotFound         the hold an end names does not exist
    ├── Conflict (409)
    │   └── HoldAlreadySettled   the hold was captured for a different amount
    └── DailySpendCapExceeded (402) the API key's daily spend cap leaves too little

Plans' errors (wallet, feature, plan not found; feature not in plan) come from
:mod:`tokenbank.plans.errors`.
"""

from __future__ import annotations

from tokenbank.errors import Conflict, NotFound, TokenBankError
from tokenbank.ledger.errors import ERROR_MESSAGES, ErrorCode


class HoldNotFound(NotFound):
    def __init__(self, hold_id: str) -> None:
        super().__init__("Hold not found")
        self.hold_id = hold_id


class HoldAlreadySettled(Conflict):
    pass


class DailySpendCapExceeded(TokenBankError):
    """The key's daily spend cap (issue 14) refused the start's hold or the end's charge."""

    status_code = 402
    code = ErrorCode.DAILY_SPEND_CAP_EXCEEDED.value

    def __init__(self) -> None:
        super().__init__(ERROR_MESSAGES[ErrorCode.DAILY_SPEND_CAP_EXCEEDED])
