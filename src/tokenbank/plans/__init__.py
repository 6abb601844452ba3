"""Plans and features (what a user may use) and the token process (seed 001)."""

from tokenbank.plans.errors import (
    AlreadyExists,
    Conflict,
    FeatureNotFound,
    FeatureNotInPlan,
    HoldAlreadySettled,
    HoldNotFound,
    NotFound,
    PlanInUse,
    PlanNotFound,
    WalletNotFound,
)
from tokenbank.plans.process import EndOutcome, StartOutcome, TokenProcess
from tokenbank.plans.service import (
    UNSET,
    Access,
    FeatureView,
    PlanService,
    PlanView,
    WalletAccess,
)

__all__ = [
    "UNSET",
    "Access",
    "AlreadyExists",
    "Conflict",
    "EndOutcome",
    "FeatureNotFound",
    "FeatureNotInPlan",
    "FeatureView",
    "HoldAlreadySettled",
    "HoldNotFound",
    "NotFound",
    "PlanInUse",
    "PlanNotFound",
    "PlanService",
    "PlanView",
    "StartOutcome",
    "TokenProcess",
    "WalletAccess",
    "WalletNotFound",
]
