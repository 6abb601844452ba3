"""Errors of plans and features; each knows its HTTP status.

    TokenBankError
    ├── NotFound (404)
    │   ├── WalletNotFound       "User wallet not found" (the Token Process dialect's message)
    │   ├── FeatureNotFound      "Feature endpoint not found"
    │   └── PlanNotFound
    ├── FeatureNotInPlan (403)   "Feature endpoint is not available in your package"
    └── Conflict (409)
        ├── AlreadyExists        a plan or feature of that name exists
        └── PlanInUse            wallets are on the plan

Bad input raises :class:`tokenbank.InvalidInput` (400), as everywhere in tokenbank.
"""

from __future__ import annotations

from tokenbank.errors import Conflict, NotFound, TokenBankError

WALLET_NOT_FOUND_MESSAGE = "User wallet not found"
FEATURE_NOT_FOUND_MESSAGE = "Feature endpoint not found"
FEATURE_NOT_IN_PLAN_MESSAGE = "Feature endpoint is not available in your package"


class WalletNotFound(NotFound):
    def __init__(self, user_id: str) -> None:
        super().__init__(WALLET_NOT_FOUND_MESSAGE)
        self.user_id = user_id


class FeatureNotFound(NotFound):
    def __init__(self, feature_id: str) -> None:
        super().__init__(FEATURE_NOT_FOUND_MESSAGE)
        self.feature_id = feature_id


class PlanNotFound(NotFound):
    def __init__(self, plan: str) -> None:
        super().__init__(f"Plan not found: {plan!r}")
        self.plan = plan


class FeatureNotInPlan(TokenBankError):
    status_code = 403

    def __init__(self, feature_id: str) -> None:
        super().__init__(FEATURE_NOT_IN_PLAN_MESSAGE)
        self.feature_id = feature_id


class AlreadyExists(Conflict):
    pass


class PlanInUse(Conflict):
    pass
