"""Plan renewals: a plan's monthly allocation, granted once per period (decision 16)."""

from tokenbank.renewals.results import (
    RenewalBatchResult,
    RenewalEligibility,
    RenewalError,
    RenewalResult,
)
from tokenbank.renewals.service import MonthlyRenewalService

__all__ = [
    "MonthlyRenewalService",
    "RenewalBatchResult",
    "RenewalEligibility",
    "RenewalError",
    "RenewalResult",
]
