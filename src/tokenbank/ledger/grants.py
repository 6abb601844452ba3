"""Grants: which tokens a wallet holds, and the one order in which they are spent.

Every credit makes a grant: its source (the credit's operation type), a category
(``paid`` or ``promotional``), a priority and an optional expiry. A debit or a capture
consumes grants in the consumption order (decision 13, docs/architecture.md):

1. lower priority number first;
2. then the earliest expiry (grants that never expire last);
3. then promotional before paid;
4. then the oldest.

A capture first takes what expired grants still hold for pending holds (below),
then follows the same order.

Expiry: once a grant's expiry has passed, its remainder leaves the wallet as an
``expiry`` transaction, except what the wallet's pending holds need: expiry never
takes the balance below what is held. What an expired grant keeps that way backs the
holds; a capture takes it first, and it leaves as soon as the wallet has other tokens
to back its holds (after a credit, a void, a capture or a hold's own expiry).

Clawback: when a purchase is refunded or disputed, what is left of its credit's grant
leaves as a ``clawback`` transaction, and nothing of any other grant; like expiry it
never takes what pending holds need. What it cannot take (spent, or held) is the
caller's loss to report.

This module is the rules alone, on plain values; the handlers and the batch kernel
apply them and ``repository/`` holds their SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from tokenbank.db.models import GRANT_CATEGORIES, MAX_GRANT_PRIORITY, MIN_GRANT_PRIORITY
from tokenbank.ledger.accounts import CREDIT_SOURCES, TOKENS_SOLD

PAID, PROMOTIONAL = GRANT_CATEGORIES
DEFAULT_GRANT_PRIORITY = 50
__all__ = [
    "DEFAULT_GRANT_PRIORITY",
    "GRANT_CATEGORIES",
    "MAX_GRANT_PRIORITY",
    "MIN_GRANT_PRIORITY",
    "LiveGrant",
]


def default_category(source: str) -> str:
    """Tokens bought with money are paid; everything else is promotional."""
    return PAID if CREDIT_SOURCES.get(source) == TOKENS_SOLD else PROMOTIONAL


@dataclass
class LiveGrant:
    """A grant as a spend sees it; ``remaining`` changes as the spend plans."""

    id: int
    category: str
    priority: int
    expires_at: datetime | None
    remaining: int

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def consumption_key(grant: LiveGrant) -> tuple[int, bool, datetime | None, bool, int]:
    # Tuples compare left to right; the bool puts never-expiring grants after every
    # dated one before the dates are compared, so None is never compared with a date.
    never_expires = grant.expires_at is None
    return (grant.priority, never_expires, grant.expires_at, grant.category == PAID, grant.id)


def plan_consumption(
    grants: Iterable[LiveGrant], amount_tokens: int, now: datetime, *, capture: bool
) -> list[tuple[LiveGrant, int]]:
    """The grants an amount is taken from, in order, and how much from each.

    A debit never takes from an expired grant; a capture takes what expired grants
    still hold first. The caller makes sure the wallet has enough (its balance is the
    sum of its grants); what no grant covers is an overdraft.
    """
    live = [grant for grant in grants if grant.remaining > 0]
    expired = sorted((g for g in live if g.expired(now)), key=consumption_key)
    current = sorted((g for g in live if not g.expired(now)), key=consumption_key)
    order = [*expired, *current] if capture else current
    takes: list[tuple[LiveGrant, int]] = []
    left = amount_tokens
    for grant in order:
        if left == 0:
            break
        take = min(grant.remaining, left)
        takes.append((grant, take))
        left -= take
    return takes


def plan_expiry(
    grants: Iterable[LiveGrant], now: datetime, *, spare_tokens: int
) -> list[tuple[LiveGrant, int]]:
    """What expires now: expired remainders, earliest expiry first, within the spare
    tokens (balance minus held) so that pending holds stay backed."""
    takes: list[tuple[LiveGrant, int]] = []
    left = max(spare_tokens, 0)
    due = sorted((g for g in grants if g.remaining > 0 and g.expired(now)), key=consumption_key)
    for grant in due:
        take = min(grant.remaining, left)
        if take > 0:
            takes.append((grant, take))
            left -= take
    return takes


def plan_clawback(
    grants: Iterable[LiveGrant], amount_tokens: int, *, spare_tokens: int
) -> list[tuple[LiveGrant, int]]:
    """What a clawback takes from ``grants`` (those of the one credit it claws back),
    oldest first: at most ``amount_tokens`` in all, and within the spare tokens
    (balance minus held) so that pending holds stay backed."""
    takes: list[tuple[LiveGrant, int]] = []
    left = min(amount_tokens, max(spare_tokens, 0))
    for grant in sorted(grants, key=lambda g: g.id):
        take = min(grant.remaining, left)
        if take > 0:
            takes.append((grant, take))
            left -= take
    return takes


def next_event_at(grants: Iterable[LiveGrant]) -> datetime | None:
    """When the wallet next needs its grants looked at: the earliest expiry of a grant
    that still holds tokens (an expired one included: it is still due)."""
    dates = [g.expires_at for g in grants if g.remaining > 0 and g.expires_at is not None]
    return min(dates, default=None)


def earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    dates = [date for date in (first, second) if date is not None]
    return min(dates, default=None)


def returned_shares(
    consumptions: Sequence[tuple[int, int]], amount_tokens: int
) -> list[tuple[int, int]]:
    """How a refund goes back: ``consumptions`` are (movement id, tokens not yet
    returned), newest first; the result is (movement id, tokens) to return."""
    shares: list[tuple[int, int]] = []
    left = amount_tokens
    for movement_id, unreturned in consumptions:
        if left == 0:
            break
        share = min(unreturned, left)
        if share > 0:
            shares.append((movement_id, share))
            left -= share
    return shares
