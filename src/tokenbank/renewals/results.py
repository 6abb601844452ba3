"""What the renewal service answers (the embedded API's MonthlyRenewalService)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class RenewalEligibility:
    """Whether a user's plan allocation is due, and if not, why and when it will be."""

    user_id: str
    eligible: bool
    reason: str | None
    tier: str | None = None
    next_renewal_date: datetime | None = None
    days_until_renewal: int | None = None


@dataclass(frozen=True, slots=True)
class RenewalResult:
    """One user's renewal: what was granted, carried over and forfeited (or, in a dry
    run, what would be); ``success`` False with ``error`` when it was not renewed."""

    success: bool
    user_id: str
    tier: str | None = None
    error: str | None = None
    dry_run: bool = False
    period_start: datetime | None = None
    period_end: datetime | None = None
    tokens_granted: int = 0
    tokens_carried: int = 0
    tokens_forfeited: int = 0
    expires_at: datetime | None = None
    new_balance: int | None = None
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class RenewalError:
    user_id: str
    error: str


@dataclass(slots=True)
class RenewalBatchResult:
    """A batch: ``skipped`` counts users another runner renewed first (not failures)."""

    dry_run: bool = False
    total_processed: int = 0
    successful: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[RenewalError] = field(default_factory=list)
    renewals: list[RenewalResult] = field(default_factory=list)
