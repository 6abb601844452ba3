"""What a renewal does with the previous allocation, and when a new one expires.

- ``expire``: an allocation lapses when its period ends; a renewal also forfeits what
  the plan's earlier allocations that never expire (granted while the plan said
  ``keep``) still hold.
- ``rollover``: an allocation lasts its period and the next one; at each renewal the
  previous allocations keep at most the cap between them (the plan's
  ``rollover_cap_tokens``, else one allocation) and the rest is forfeited. What rolls
  over is spent before the new allocation (it expires first).
- ``keep``: allocations never expire and nothing is forfeited.

A policy applies to the plan's own allocations: what another plan granted the wallet
before it switched keeps the expiry it was granted with. The cap is applied when the
renewal runs: what was spent between the period's end and
the run (the daily job runs at 02:00 by default) is not taken back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tokenbank.db.models import ALLOCATION_POLICIES
from tokenbank.ledger.grants import LiveGrant, consumption_key
from tokenbank.renewals.periods import Period, following

EXPIRE, ROLLOVER, KEEP = ALLOCATION_POLICIES


def carry_limit(policy: str, allocation_tokens: int, cap_tokens: int | None) -> int | None:
    """How much of the previous allocations a renewal keeps (None: all of it)."""
    if policy == KEEP:
        return None
    if policy == ROLLOVER:
        return allocation_tokens if cap_tokens is None else cap_tokens
    return 0


def allocation_expiry(policy: str, anchor: datetime, period: Period) -> datetime | None:
    """When an allocation granted for ``period`` expires."""
    if policy == KEEP:
        return None
    if policy == ROLLOVER:
        # One period more: the next renewal decides how much of it stays.
        return following(anchor, period).end
    return period.end


def plan_forfeit(
    allocations: Sequence[LiveGrant], keep_tokens: int | None, *, spare_tokens: int
) -> list[tuple[LiveGrant, int]]:
    """What to take from the previous allocations so that ``keep_tokens`` remain.

    The tokens kept are those that would be spent first; what pending holds need
    (beyond ``spare_tokens``, the balance minus the held) is never taken.
    """
    if keep_tokens is None:
        return []
    ordered = sorted((g for g in allocations if g.remaining > 0), key=consumption_key)
    keep_left = keep_tokens
    takes: list[tuple[LiveGrant, int]] = []
    take_left = max(spare_tokens, 0)
    for grant in ordered:
        kept = min(grant.remaining, keep_left)
        keep_left -= kept
        take = min(grant.remaining - kept, take_left)
        if take > 0:
            takes.append((grant, take))
            take_left -= take
    return takes
