"""Errors of the token process; each knows its HTTP status.

    TokenBankError
    ├── NotFound (404)
    │   └── HoldNotFound         the hold an end names does not exist
    └── Conflict (409)
        └── HoldAlreadySettled   the hold was captured for a different amount

Plans' errors (wallet, feature, plan not found; feature not in plan) come from
:mod:`tokenbank.plans.errors`.
"""

from __future__ import annotations

from tokenbank.errors import Conflict, NotFound


class HoldNotFound(NotFound):
    def __init__(self, hold_id: str) -> None:
        super().__init__("Hold not found")
        self.hold_id = hold_id


class HoldAlreadySettled(Conflict):
    pass
