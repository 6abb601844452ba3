"""Monthly plan renewals (the embedded API's ``MonthlyRenewalService``, decision 16).

A wallet on a plan with a monthly allocation gets that allocation once per period
(:mod:`tokenbank.renewals.periods`). A renewal, in one database transaction: locks the
wallet, expires what is due, applies the plan's policy to what is left of the previous
allocations (:mod:`tokenbank.renewals.policy`), grants the new allocation as a
promotional grant expiring as the policy says, records the renewal under the primary
key (wallet, period start), and sets when the next one is due. Two runners racing on
one wallet queue on its row lock; the second sees the record and skips, and the key
refuses a duplicate even if the lock were bypassed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.engine import read_transaction, write_transaction
from tokenbank.db.rows import AnyRow
from tokenbank.errors import InvalidInput
from tokenbank.ledger import handlers
from tokenbank.ledger.grant_effects import live_grant, load
from tokenbank.ledger.grants import PROMOTIONAL, LiveGrant
from tokenbank.ledger.operations import Credit
from tokenbank.ledger.repository import renewals as repo
from tokenbank.plans.repository import plan_row
from tokenbank.renewals import policy
from tokenbank.renewals.periods import Period, period_at
from tokenbank.renewals.results import (
    RenewalBatchResult,
    RenewalEligibility,
    RenewalError,
    RenewalResult,
)
from tokenbank.validation import validate_amount, validate_user_id

if TYPE_CHECKING:
    from tokenbank.ledger.service import TokenService

ALREADY_RENEWED = "already renewed for this period"
MAX_BATCH_LIMIT = 100_000


class RenewalRefused(Exception):
    """A renewal that cannot go ahead; its message says why (rolls the attempt back)."""


def eligibility(wallet: AnyRow | None, user_id: str, now: datetime) -> RenewalEligibility:
    """Whether a wallet (with its plan's columns) is due a renewal at ``now``."""
    if wallet is None:
        return RenewalEligibility(user_id, False, "no wallet for this user")
    tier = wallet.plan
    if tier is None:
        return RenewalEligibility(user_id, False, "not on a plan")
    if not wallet.monthly_allocation_tokens:
        return RenewalEligibility(user_id, False, f"plan {tier!r} has no monthly allocation", tier)
    if wallet.status != "active":
        return RenewalEligibility(user_id, False, f"wallet is {wallet.status}", tier)
    due_at: datetime = wallet.renewal_due_at
    if due_at > now:
        days = math.ceil((due_at - now) / timedelta(days=1))
        return RenewalEligibility(user_id, False, ALREADY_RENEWED, tier, due_at, days)
    return RenewalEligibility(user_id, True, None, tier, due_at, 0)


class MonthlyRenewalService:
    """Plan renewals over a :class:`~tokenbank.TokenService`'s database and clock."""

    def __init__(self, tokens: TokenService) -> None:
        self._tokens = tokens

    def get_cron_expression(self) -> str:
        """When the jobs worker runs renewals (``TOKENBANK_RENEWAL_CRON``, 02:00 daily)."""
        return self._tokens.settings.renewal_cron

    async def check_eligibility(self, user_id: str) -> RenewalEligibility:
        validate_user_id(user_id)
        engine = await self._tokens.engine()
        async with read_transaction(engine) as conn:
            wallet = await repo.wallet_and_plan(conn, user_id)
        return eligibility(wallet, user_id, self._tokens.clock())

    async def renew_user(self, user_id: str) -> RenewalResult:
        """Renew one user now if due; otherwise ``success`` False and the reason."""
        validate_user_id(user_id)
        return await self._renew(user_id, dry_run=False)

    async def renew_all_eligible(
        self,
        *,
        dry_run: bool = False,
        tier: str | None = None,
        limit: int | None = None,
        continue_on_error: bool = True,
        on_result: Callable[[RenewalResult, int], object] | None = None,
    ) -> RenewalBatchResult:
        """Renew every due user (the longest-waiting first, at most ``limit``), each in
        a transaction of its own; with ``dry_run``, say what each would get.

        ``on_result(result, total)`` is called after each user (a progress bar).
        """
        if limit is not None:
            validate_amount(limit, field_name="limit")
            limit = min(limit, MAX_BATCH_LIMIT)
        engine = await self._tokens.engine()
        async with read_transaction(engine) as conn:
            if tier is not None and await plan_row(conn, tier) is None:
                raise InvalidInput("tier", f"no plan named {tier!r}")
            due = await repo.due_user_ids(conn, self._tokens.clock(), plan=tier, limit=limit)
        batch = RenewalBatchResult(dry_run=dry_run)
        for user_id in due:
            result = await self._renew(user_id, dry_run=dry_run)
            _count(batch, result)
            if on_result is not None:
                on_result(result, len(due))
            if not result.success and result.error != ALREADY_RENEWED and not continue_on_error:
                break
        return batch

    async def _renew(self, user_id: str, *, dry_run: bool) -> RenewalResult:
        engine = await self._tokens.engine()
        now = self._tokens.clock()
        try:
            if dry_run:
                async with read_transaction(engine) as conn:
                    return await _preview(conn, user_id, now)
            async with write_transaction(engine) as conn:
                result = await renew_locked(conn, user_id, now)
        except RenewalRefused as refused:
            return RenewalResult(success=False, user_id=user_id, error=str(refused))
        except IntegrityError:
            # The primary key: another runner recorded this period first.
            return RenewalResult(success=False, user_id=user_id, error=ALREADY_RENEWED)
        await self._tokens.invalidate_cache(user_id)
        return result


def _count(batch: RenewalBatchResult, result: RenewalResult) -> None:
    batch.total_processed += 1
    if result.success:
        batch.successful += 1
        batch.renewals.append(result)
    elif result.error == ALREADY_RENEWED:
        batch.skipped += 1
    else:
        batch.failed += 1
        batch.errors.append(RenewalError(result.user_id, result.error or "failed"))


async def _due_wallet(conn: AsyncConnection, user_id: str, now: datetime, *, lock: bool) -> AnyRow:
    read = repo.lock_wallet_and_plan if lock else repo.wallet_and_plan
    wallet = await read(conn, user_id)
    decision = eligibility(wallet, user_id, now)
    if not decision.eligible or wallet is None:
        raise RenewalRefused(decision.reason)
    return wallet


def _terms(wallet: AnyRow, now: datetime) -> tuple[Period, int | None, datetime | None]:
    """The period renewed, how much of earlier allocations may stay, the new expiry."""
    anchor: datetime = wallet.plan_since
    period = period_at(anchor, now)
    keep = policy.carry_limit(
        wallet.allocation_policy, int(wallet.monthly_allocation_tokens), wallet.rollover_cap_tokens
    )
    return period, keep, policy.allocation_expiry(wallet.allocation_policy, anchor, period)


async def _forfeit(
    conn: AsyncConnection, wallet: AnyRow, keep: int | None, now: datetime
) -> tuple[list[LiveGrant], list[tuple[LiveGrant, int]]]:
    """The plan's earlier allocations, and what the policy takes from them."""
    rows = await repo.live_allocations(conn, wallet.id, wallet.plan, now)
    allocations = [live_grant(row) for row in rows]
    spare = int(wallet.balance_tokens) - int(wallet.held_tokens)
    return allocations, policy.plan_forfeit(allocations, keep, spare_tokens=spare)


async def _preview(conn: AsyncConnection, user_id: str, now: datetime) -> RenewalResult:
    wallet = await _due_wallet(conn, user_id, now, lock=False)
    period, keep, expires_at = _terms(wallet, now)
    allocations, takes = await _forfeit(conn, wallet, keep, now)
    forfeited = sum(take for _, take in takes)
    return _result(wallet, period, allocations, forfeited, expires_at, dry_run=True)


async def renew_locked(conn: AsyncConnection, user_id: str, now: datetime) -> RenewalResult:
    """Renew a due wallet inside the caller's transaction (a paid Stripe invoice's, or
    the service's own); RenewalRefused when it is not due. Run it in a savepoint: a
    refusal may follow writes of its own."""
    wallet = await _due_wallet(conn, user_id, now, lock=True)
    period, keep, expires_at = _terms(wallet, now)
    if await repo.renewal_exists(conn, wallet.id, period.start):
        # Renewed for this period already (by a runner whose due date was then lost,
        # or after the plan was left and joined again within one period).
        await repo.mark_renewed(conn, wallet.id, renewed_at=now, due_at=period.end)
        raise RenewalRefused(ALREADY_RENEWED)
    await handlers.expire_grants(conn, user_id, now)
    wallet = await _due_wallet(conn, user_id, now, lock=True)  # its balance after expiry
    allocations, takes = await _forfeit(conn, wallet, keep, now)
    if takes:
        description = f"Plan {wallet.plan} allocation beyond what the renewal keeps"
        grants = await load(conn, wallet.id)
        await handlers.write_expiry(conn, wallet, grants, takes, now, description=description)
    credited = await handlers.credit(conn, _allocation(wallet, period, expires_at), now)
    if not credited.success or credited.transaction_id is None:
        raise RenewalRefused(credited.error or "the allocation could not be credited")
    forfeited = sum(take for _, take in takes)
    result = _result(wallet, period, allocations, forfeited, expires_at, dry_run=False)
    await repo.insert_renewal(conn, _record(wallet, period, result, credited.transaction_id, now))
    await repo.mark_renewed(conn, wallet.id, renewed_at=now, due_at=period.end)
    return replace(result, new_balance=credited.new_balance, transaction_id=credited.transaction_id)


def _allocation(wallet: AnyRow, period: Period, expires_at: datetime | None) -> Credit:
    return Credit(
        user_id=wallet.user_id,
        amount_tokens=int(wallet.monthly_allocation_tokens),
        operation_type="renewal",
        category=PROMOTIONAL,
        expires_at=expires_at,
        description=f"Plan {wallet.plan}: monthly allocation",
        metadata={
            "plan": wallet.plan,
            "periodStart": period.start.isoformat(),
            "periodEnd": period.end.isoformat(),
        },
    )


def _result(
    wallet: AnyRow,
    period: Period,
    allocations: list[LiveGrant],
    forfeited: int,
    expires_at: datetime | None,
    *,
    dry_run: bool,
) -> RenewalResult:
    return RenewalResult(
        success=True,
        user_id=wallet.user_id,
        tier=wallet.plan,
        dry_run=dry_run,
        period_start=period.start,
        period_end=period.end,
        tokens_granted=int(wallet.monthly_allocation_tokens),
        tokens_carried=sum(grant.remaining for grant in allocations) - forfeited,
        tokens_forfeited=forfeited,
        expires_at=expires_at,
    )


def _record(
    wallet: AnyRow, period: Period, result: RenewalResult, transaction_id: str, now: datetime
) -> dict[str, object]:
    return {
        "wallet_id": wallet.id,
        "period_start": period.start,
        "period_end": period.end,
        "plan": wallet.plan,
        "policy": wallet.allocation_policy,
        "granted_tokens": result.tokens_granted,
        "carried_tokens": result.tokens_carried,
        "forfeited_tokens": result.tokens_forfeited,
        "transaction_id": transaction_id,
        "created_at": now,
    }
