"""Plans and features: what a user may use, and the markup on it."""

from tokenbank.errors import Conflict, NotFound
from tokenbank.plans.errors import (
    AlreadyExists,
    FeatureNotFound,
    FeatureNotInPlan,
    PlanInUse,
    PlanNotFound,
    WalletNotFound,
)
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
    "FeatureNotFound",
    "FeatureNotInPlan",
    "FeatureView",
    "NotFound",
    "PlanInUse",
    "PlanNotFound",
    "PlanService",
    "PlanView",
    "WalletAccess",
    "WalletNotFound",
]
