"""The token process (Token Process dialect): ``start`` decides access, ``end`` records the usage.

``start`` checks, in this order, that the user has an *active* wallet, that the
feature exists, and that the user's plan includes it (a user on no plan has no
features); then it answers whether the user may go ahead. ``end`` prices what the
call used by the feature's rule, for the request's model and the user's plan, and
records it on the ledger.

Two modes:

**Plain** (the seed's): ``start`` only reads. The user may go ahead when the
available balance (balance - held) is at least the feature's ``min_balance_tokens``.
Nothing is reserved, so concurrent starts may all pass on the same last tokens; the
ends then record every cost in full, even past zero (decision 6, docs/architecture.md).

**Hold**: when the feature has ``hold_tokens``, or the start asks for a hold (``hold``
or ``hold_tokens``; ``hold: false`` asks for plain mode), ``start`` reserves the
request's ``hold_tokens``, else the feature's, else its ``min_balance_tokens``, with a
hold that expires (``TOKENBANK_HOLD_DEFAULT_TTL_SECONDS``). Holds are conditional updates of the
wallet, so concurrent starts can never all pass on the same last tokens: if the
hold can't be placed the user may not go ahead. ``end`` with the ``hold_id`` (or
with the same request id as the start) captures the actual cost from the hold and
releases the rest; a cost above the hold is still recorded in full. An end for a
hold that has expired or been released records the cost as a plain charge.

Retries: a start with a request id places its hold once. An end with a request id
(or ``Idempotency-Key``), or with a hold id, charges once: a retry answers the first
charge's cost and balance (its status is the wallet's now); the same id with
different usage is refused (409). Without any id, a retried end charges again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tokenbank.db.engine import read_transaction
from tokenbank.db.rows import AnyRow
from tokenbank.errors import IdempotencyConflict, InvalidInput, TokenBankError
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.operations import SpendCap, validate_hold_id
from tokenbank.ledger.repository import reads as ledger_reads
from tokenbank.ledger.results import HoldResult, HoldView, OperationResult
from tokenbank.ledger.service import TokenService
from tokenbank.plans.errors import FeatureNotFound, FeatureNotInPlan, WalletNotFound
from tokenbank.plans.service import Access, FeatureView, PlanService, WalletAccess, profit_for
from tokenbank.pricing.calculator import Quote, Usage
from tokenbank.pricing.numbers import decimal_text
from tokenbank.pricing.rules import PerUnitRule
from tokenbank.pricing.service import PricingService
from tokenbank.process.errors import DailySpendCapExceeded, HoldAlreadySettled, HoldNotFound
from tokenbank.validation import validate_amount

DERIVED_KEY_PREFIX = "token-process-end:"


def start_key(request_id: str | None) -> str | None:
    """The key of a start's hold, derived from the request id the end also carries.

    A start and its end are two requests, so they cannot share one idempotency key;
    the hold takes a key derived from it, and the end finds its hold by that key.
    """
    if request_id is None:
        return None
    return "start:" + hashlib.sha256(request_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StartOutcome:
    user_id: str
    balance_tokens: int
    available_tokens: int
    accessible: bool
    hold_id: str | None = None
    hold_expires_at: datetime | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class EndOutcome:
    user_id: str
    balance_tokens: int
    available_tokens: int
    cost_tokens: int
    exact_cost: str
    transaction_id: str | None = None
    hold_id: str | None = None
    replayed: bool = False

    @property
    def overdrawn(self) -> bool:
        """The usage took the wallet below what it holds: it is suspended until topped up."""
        return self.available_tokens < 0


def _active_wallet(access: Access, user_id: str) -> WalletAccess:
    if access.wallet is None or access.wallet.status != "active":
        raise WalletNotFound(user_id)
    return access.wallet


def _feature(access: Access, feature_id: str) -> FeatureView:
    if access.feature is None:
        raise FeatureNotFound(feature_id)
    return access.feature


def _hold_amount(feature: FeatureView, hold: bool | None, hold_tokens: int | None) -> int | None:
    """How much a start reserves; None in plain mode."""
    if hold_tokens is not None:
        validate_amount(hold_tokens, field_name="hold_tokens")
        if hold is False:
            raise InvalidInput("hold", "is false, but hold_tokens asks for a hold")
    wants_hold = hold if hold is not None else (hold_tokens or feature.hold_tokens) is not None
    if not wants_hold:
        return None
    amount = hold_tokens or feature.hold_tokens or feature.min_balance_tokens
    if not amount:
        raise InvalidInput(
            "hold_tokens", "hold mode needs an amount: send hold_tokens or set the feature's"
        )
    return amount


class TokenProcess:
    """the Token Process dialect's start and end over the ledger, plans and pricing."""

    def __init__(self, tokens: TokenService, plans: PlanService, pricing: PricingService) -> None:
        self._tokens = tokens
        self._plans = plans
        self._pricing = pricing

    # --- start ---------------------------------------------------------------------------

    async def start(
        self,
        user_id: str,
        feature_id: str,
        *,
        hold: bool | None = None,
        hold_tokens: int | None = None,
        idempotency_key: str | None = None,
        idempotency_scope: str = "",
        spend_cap: SpendCap | None = None,
    ) -> StartOutcome:
        access = await self._plans.access(user_id, feature_id)
        wallet = _active_wallet(access, user_id)
        feature = _feature(access, feature_id)
        if not access.in_plan:
            raise FeatureNotInPlan(feature_id)
        amount = _hold_amount(feature, hold, hold_tokens)
        if amount is None:
            return StartOutcome(
                user_id=user_id,
                balance_tokens=wallet.balance_tokens,
                available_tokens=wallet.available_tokens,
                accessible=wallet.available_tokens >= feature.min_balance_tokens,
            )
        placed = await self._tokens.hold(
            user_id,
            amount,
            metadata={"feature_endpoint_id": feature.id},
            description=f"token process start: {feature.id}",
            idempotency_key=start_key(idempotency_key),
            idempotency_scope=idempotency_scope,
            spend_cap=spend_cap,
        )
        if placed.error_code == ErrorCode.DAILY_SPEND_CAP_EXCEEDED:
            raise DailySpendCapExceeded()
        return await self._started(user_id, feature, amount, placed)

    async def _started(
        self, user_id: str, feature: FeatureView, amount: int, placed: HoldResult
    ) -> StartOutcome:
        if placed.success and not placed.replayed and placed.hold_id is not None:
            available_before = (placed.available_tokens or 0) + amount
            if available_before >= feature.min_balance_tokens:
                return StartOutcome(
                    user_id=user_id,
                    balance_tokens=placed.new_balance or 0,
                    available_tokens=placed.available_tokens or 0,
                    accessible=True,
                    hold_id=placed.hold_id,
                    hold_expires_at=placed.expires_at,
                )
            await self._tokens.void(placed.hold_id)
        elif placed.error_code in (ErrorCode.WALLET_NOT_FOUND, ErrorCode.WALLET_CLOSED):
            raise WalletNotFound(user_id)
        balance = await self._tokens.get_balance(user_id)
        if balance is None:
            raise WalletNotFound(user_id)
        # A replayed start answers from its hold as it is now (captured: spent).
        live = placed.expires_at is not None and placed.expires_at > self._tokens.clock()
        accessible = placed.replayed and placed.status == "pending" and live
        return StartOutcome(
            user_id=user_id,
            balance_tokens=balance.tokens_balance,
            available_tokens=balance.available,
            accessible=accessible,
            hold_id=placed.hold_id if accessible else None,
            hold_expires_at=placed.expires_at if accessible else None,
            replayed=placed.replayed,
        )

    # --- end -----------------------------------------------------------------------------

    async def end(
        self,
        user_id: str,
        feature_id: str,
        usage: Usage,
        *,
        model: str | None = None,
        hold_id: str | None = None,
        idempotency_key: str | None = None,
        idempotency_scope: str = "",
        spend_cap: SpendCap | None = None,
    ) -> EndOutcome:
        access = await self._plans.access(user_id, feature_id)
        if access.wallet is None or access.wallet.status == "closed":
            raise WalletNotFound(user_id)
        feature = _feature(access, feature_id)
        hold = await self._hold_for(user_id, hold_id, idempotency_key, idempotency_scope)
        request = _request(user_id, feature_id, usage, model)
        charge_key = idempotency_key or (DERIVED_KEY_PREFIX + hold.hold_id if hold else None)
        prior = await self._prior_charge(hold, charge_key, idempotency_scope)
        if prior is not None:
            return await self._replay(prior, request, charge_key, hold)
        if usage.is_zero:
            return await self._no_charge(user_id, hold, "0")
        quote = await self._pricing.quote(feature.rule, usage, model=model, profit=access.profit())
        if quote.cost_tokens == 0:
            return await self._no_charge(user_id, hold, decimal_text(quote.exact_cost))
        charge = _Charge(
            user_id=user_id,
            quote=quote,
            pricing=quote.record(
                request=request,
                feature_endpoint_id=feature.id,
                pricing_version=feature.pricing_version,
                plan=access.wallet.plan,
                hold_id=hold.hold_id if hold else None,
            ),
            metadata={"feature_endpoint_id": feature.id, "model": model},
            description=f"token process: {feature.name}",
            key=charge_key,
            scope=idempotency_scope,
            spend_cap=spend_cap,
        )
        if hold is not None and hold.status == "pending":
            return await self._capture(charge, hold)
        return await self._debit(charge)

    async def _hold_for(
        self, user_id: str, hold_id: str | None, key: str | None, scope: str
    ) -> HoldView | None:
        """The hold this end settles: named, or placed by a start with the same key."""
        if hold_id is not None:
            validate_hold_id(hold_id)
            hold = await self._tokens.get_hold(hold_id)
            if hold is None or hold.user_id != user_id:
                raise HoldNotFound(hold_id)
            return hold
        if key is None:
            return None
        async with read_transaction(await self._tokens.engine()) as conn:
            found_id = await ledger_reads.hold_id_by_key(conn, scope, start_key(key) or key)
        hold = None if found_id is None else await self._tokens.get_hold(found_id)
        # A key another user's start used is not this end's hold.
        return hold if hold is not None and hold.user_id == user_id else None

    async def _prior_charge(
        self, hold: HoldView | None, key: str | None, scope: str
    ) -> AnyRow | None:
        """The charge an earlier end made for this hold or key, if any."""
        settled = hold is not None and hold.status == "captured"
        if not settled and key is None:
            return None  # nothing to look up: no connection taken
        async with read_transaction(await self._tokens.engine()) as conn:
            if hold is not None and settled:
                found = await ledger_reads.usage_by_hold(conn, hold.hold_id)
                if found is None:  # captured for nothing, by someone else
                    raise HoldAlreadySettled(f"hold {hold.hold_id} was already settled")
                return found
            if key is not None:
                return await ledger_reads.usage_by_key(conn, scope, key)
        return None

    async def _replay(
        self, prior: AnyRow, request: dict[str, Any], key: str | None, hold: HoldView | None
    ) -> EndOutcome:
        if (prior.pricing or {}).get("request") != request:
            if hold is not None and hold.status == "captured":
                raise HoldAlreadySettled(
                    f"hold {hold.hold_id} was already settled by a different end request"
                )
            raise IdempotencyConflict(key or "")
        balance = await self._tokens.get_balance(prior.user_id)
        return EndOutcome(
            user_id=prior.user_id,
            balance_tokens=int(prior.balance_after),
            available_tokens=balance.available if balance else 0,
            cost_tokens=int(prior.amount_tokens),
            exact_cost=str(prior.pricing.get("exact_cost", prior.amount_tokens)),
            transaction_id=prior.id,
            hold_id=prior.hold_id,
            replayed=True,
        )

    async def _no_charge(self, user_id: str, hold: HoldView | None, exact: str) -> EndOutcome:
        if hold is not None and hold.status == "pending":
            await self._tokens.void(hold.hold_id)
        balance = await self._tokens.get_balance(user_id)
        if balance is None:
            raise WalletNotFound(user_id)
        return EndOutcome(
            user_id=user_id,
            balance_tokens=balance.tokens_balance,
            available_tokens=balance.available,
            cost_tokens=0,
            exact_cost=exact,
            hold_id=hold.hold_id if hold else None,
        )

    async def _capture(self, charge: _Charge, hold: HoldView) -> EndOutcome:
        result = await self._tokens.capture(
            hold.hold_id,
            charge.quote.cost_tokens,
            metadata=charge.metadata,
            description=charge.description,
            idempotency_key=charge.key,
            idempotency_scope=charge.scope,
            pricing=charge.pricing,
            spend_cap=charge.spend_cap,
        )
        if result.success:
            return await self._outcome(charge, result, hold_id=hold.hold_id)
        if result.error_code == ErrorCode.DAILY_SPEND_CAP_EXCEEDED:
            raise DailySpendCapExceeded()  # the hold stays pending until voided or expired
        if result.error_code == ErrorCode.HOLD_NOT_PENDING and result.status == "captured":
            raise HoldAlreadySettled(f"hold {hold.hold_id} was already settled")
        if result.error_code == ErrorCode.HOLD_EXPIRED:
            # Release it now rather than at the next sweep, so that the charge below
            # is not taken for an overdraft because of a reservation that has ended.
            await self._tokens.void(hold.hold_id)
        if result.error_code in (ErrorCode.HOLD_EXPIRED, ErrorCode.HOLD_NOT_PENDING):
            return await self._debit(charge)  # the usage happened: record it anyway
        raise TokenBankError(result.error or "capture failed")

    async def _debit(self, charge: _Charge) -> EndOutcome:
        result = await self._tokens.debit(
            charge.user_id,
            amount=charge.quote.cost_tokens,
            metadata=charge.metadata,
            description=charge.description,
            idempotency_key=charge.key,
            idempotency_scope=charge.scope,
            allow_overdraft=True,
            pricing=charge.pricing,
            spend_cap=charge.spend_cap,
        )
        if result.error_code == ErrorCode.DAILY_SPEND_CAP_EXCEEDED:
            raise DailySpendCapExceeded()
        if not result.success:
            raise WalletNotFound(charge.user_id)  # missing or closed: nothing else refuses
        return await self._outcome(charge, result)

    async def _outcome(
        self, charge: _Charge, result: OperationResult | HoldResult, *, hold_id: str | None = None
    ) -> EndOutcome:
        available = result.available_tokens
        if available is None:  # a concurrent duplicate was answered by the first one
            balance = await self._tokens.get_balance(charge.user_id)
            available = balance.available if balance else 0
        return EndOutcome(
            user_id=charge.user_id,
            balance_tokens=result.new_balance or 0,
            available_tokens=available,
            cost_tokens=charge.quote.cost_tokens,
            exact_cost=decimal_text(charge.quote.exact_cost),
            transaction_id=result.transaction_id,
            hold_id=hold_id,
            replayed=result.replayed,
        )

    # --- estimates -----------------------------------------------------------------------

    async def quote_usage(
        self,
        usage: Usage,
        *,
        feature_id: str | None,
        model: str | None,
        wallet: WalletAccess | None,
    ) -> tuple[Quote, FeatureView | None]:
        """Price a usage without charging: by the feature's rule, or per unit by model."""
        feature = None if feature_id is None else await self._plans.get_feature(feature_id)
        rule = feature.rule if feature is not None else PerUnitRule()
        priced = await self._pricing.quote(
            rule, usage, model=model, profit=profit_for(feature, wallet)
        )
        return priced, feature


def _request(user_id: str, feature_id: str, usage: Usage, model: str | None) -> dict[str, Any]:
    """What makes two end requests the same, for retries."""
    return {
        "user_id": user_id,
        "feature_endpoint_id": feature_id,
        "input_token": usage.input_units,
        "output_token": usage.output_units,
        "model": model,
    }


@dataclass(frozen=True, slots=True)
class _Charge:
    user_id: str
    quote: Quote
    pricing: dict[str, Any]
    metadata: dict[str, Any]
    description: str
    key: str | None
    scope: str
    spend_cap: SpendCap | None = None
