"""Plans and features: what a user may use, and how each feature is priced.

A *feature* is a billable endpoint of an app (the Token Process dialect's ``feature_endpoint_id``)
with a pricing rule (:mod:`tokenbank.pricing.rules`), a minimum available balance
for access, an optional hold amount (hold mode of the token process), and an
optional profit percentage. A *plan* (the Token Process dialect's "package") names the features its
users may use, a monthly allocation and a profit percentage; the feature's profit
percentage, when set, overrides the plan's. A wallet is on at most one plan; a
wallet without a plan may use no feature.

Changing a feature's rule or profit percentage bumps its ``pricing_version``, which
is recorded with every charge priced by it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbank.apps.service import validate_slug
from tokenbank.clock import Clock, system_clock
from tokenbank.config import MAX_DESCRIPTION_LENGTH
from tokenbank.db.engine import read_transaction, write_transaction
from tokenbank.db.models import ALLOCATION_POLICIES
from tokenbank.db.rows import AnyRow
from tokenbank.errors import InvalidInput
from tokenbank.ledger.repository import reads as ledger_reads
from tokenbank.ledger.repository import writes as ledger_writes
from tokenbank.plans import repository as repo
from tokenbank.plans.errors import (
    AlreadyExists,
    FeatureNotFound,
    PlanInUse,
    PlanNotFound,
    WalletNotFound,
)
from tokenbank.pricing.calculator import Profit
from tokenbank.pricing.numbers import decimal_text, parse_decimal
from tokenbank.pricing.rules import PricingRule, parse_rule, rule_json
from tokenbank.validation import validate_amount, validate_text, validate_user_id

PLAN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FEATURE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@~-]{0,127}$")
MAX_FEATURE_NAME_LENGTH = 200
MAX_PROFIT_PERCENT = Decimal(1_000)
MAX_FEATURES_PER_PLAN = 1_000
# The embedded API's subscription tiers and their monthly allocations.
DEFAULT_PLANS = (
    ("Gift", 100, "Seed tier: 100 tokens a month"),
    ("Professional", 2_000, "Seed tier: 2,000 tokens a month"),
    ("Business", 10_000, "Seed tier: 10,000 tokens a month"),
)


class _Unset(Enum):
    UNSET = "unset"


UNSET: Final = _Unset.UNSET


# --- views -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanView:
    name: str
    description: str | None
    monthly_allocation_tokens: int
    profit_percent: Decimal
    features: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    allocation_policy: str = "expire"
    rollover_cap_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class FeatureView:
    id: str
    name: str
    app: str | None
    min_balance_tokens: int
    hold_tokens: int | None
    profit_percent: Decimal | None
    rule: PricingRule
    pricing_version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WalletAccess:
    """A wallet as the token process sees it."""

    user_id: str
    status: str
    balance_tokens: int
    held_tokens: int
    plan: str | None
    plan_profit_percent: Decimal | None

    @property
    def available_tokens(self) -> int:
        return self.balance_tokens - self.held_tokens


@dataclass(frozen=True, slots=True)
class Access:
    """Everything the token process needs to decide, read in one snapshot."""

    wallet: WalletAccess | None
    feature: FeatureView | None
    in_plan: bool

    def profit(self) -> Profit:
        """The feature's profit percentage, else the plan's, else none (Token Process dialect)."""
        return profit_for(self.feature, self.wallet)


def profit_for(feature: FeatureView | None, wallet: WalletAccess | None) -> Profit:
    if feature is not None and feature.profit_percent is not None:
        return Profit(feature.profit_percent, "feature")
    if wallet is not None and wallet.plan_profit_percent is not None:
        return Profit(wallet.plan_profit_percent, "plan")
    return Profit()


def _plan_view(row: AnyRow, features: Iterable[str]) -> PlanView:
    return PlanView(
        name=row.name,
        description=row.description,
        monthly_allocation_tokens=int(row.monthly_allocation_tokens),
        profit_percent=Decimal(row.profit_percent),
        features=tuple(features),
        created_at=row.created_at,
        updated_at=row.updated_at,
        allocation_policy=row.allocation_policy,
        rollover_cap_tokens=None
        if row.rollover_cap_tokens is None
        else int(row.rollover_cap_tokens),
    )


def _feature_view(row: AnyRow, rule: Any = None) -> FeatureView:
    """A feature from its row (``rule``: its pricing rule, when the row has none)."""
    return FeatureView(
        id=row.id,
        name=row.name,
        app=row.app_slug,
        min_balance_tokens=int(row.min_balance_tokens),
        hold_tokens=None if row.hold_tokens is None else int(row.hold_tokens),
        profit_percent=None if row.profit_percent is None else Decimal(row.profit_percent),
        rule=parse_rule(row.pricing_rule if rule is None else rule, field_name="pricing_rule"),
        pricing_version=int(row.pricing_version),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# --- validation ------------------------------------------------------------------------


def validate_plan_name(value: object, *, field_name: str = "plan") -> str:
    if not isinstance(value, str) or not PLAN_NAME_PATTERN.fullmatch(value):
        raise InvalidInput(
            field_name, "must be 1-64 letters, digits, '.', '_' or '-' (a letter or digit first)"
        )
    return value


def validate_feature_id(value: object, *, field_name: str = "feature_endpoint_id") -> str:
    if not isinstance(value, str) or not FEATURE_ID_PATTERN.fullmatch(value):
        raise InvalidInput(
            field_name,
            "must be 1-128 letters, digits, '.', '_', ':', '@', '~' or '-'"
            " (a letter or digit first)",
        )
    return value


def parse_profit_percent(value: object, *, field_name: str = "profit_percent") -> Decimal:
    return parse_decimal(
        value, field_name=field_name, minimum=Decimal(0), maximum=MAX_PROFIT_PERCENT
    )


def validate_allocation_policy(value: object) -> str:
    if value not in ALLOCATION_POLICIES:
        raise InvalidInput("allocation_policy", f"must be one of: {', '.join(ALLOCATION_POLICIES)}")
    return str(value)


def _rollover_cap(value: object) -> int | None:
    if value is None:
        return None
    return validate_amount(value, field_name="rollover_cap_tokens", allow_zero=True)


def _feature_name(value: object) -> str:
    validate_text(value, field_name="name", max_length=MAX_FEATURE_NAME_LENGTH, required=True)
    return str(value)


def _description(value: object) -> str | None:
    validate_text(
        value, field_name="description", max_length=MAX_DESCRIPTION_LENGTH, required=False
    )
    return None if value is None else str(value)


def _profit_text(value: object) -> str | None:
    return None if value is None else decimal_text(parse_profit_percent(value))


def _hold_tokens(value: object) -> int | None:
    return None if value is None else validate_amount(value, field_name="hold_tokens")


def _feature_ids(values: Sequence[object]) -> list[str]:
    if isinstance(values, str) or len(values) > MAX_FEATURES_PER_PLAN:
        raise InvalidInput("features", f"must be a list of at most {MAX_FEATURES_PER_PLAN} ids")
    return list(dict.fromkeys(validate_feature_id(v, field_name="features") for v in values))


# --- the service -----------------------------------------------------------------------


class PlanService:
    def __init__(self, engine: AsyncEngine, *, clock: Clock = system_clock) -> None:
        self._engine = engine
        self._clock = clock

    # --- plans ---------------------------------------------------------------------------

    async def list_plans(self) -> list[PlanView]:
        async with read_transaction(self._engine) as conn:
            rows = await repo.plan_rows(conn)
            members = await repo.features_by_plan(conn)
        return [_plan_view(row, members.get(row.name, ())) for row in rows]

    async def get_plan(self, name: str) -> PlanView:
        validate_plan_name(name)
        async with read_transaction(self._engine) as conn:
            return await self._plan(conn, name)

    async def create_plan(
        self,
        name: str,
        *,
        description: str | None = None,
        monthly_allocation_tokens: int = 0,
        profit_percent: object = 0,
        features: Sequence[str] = (),
        allocation_policy: str = "expire",
        rollover_cap_tokens: int | None = None,
    ) -> PlanView:
        """Create a plan. ``allocation_policy`` says what a renewal does with what is
        left of the previous allocation (decision 16); ``rollover_cap_tokens`` caps
        what ``rollover`` carries over (None: one allocation)."""
        now = self._clock()
        values = {
            "name": validate_plan_name(name, field_name="name"),
            "description": _description(description),
            "monthly_allocation_tokens": validate_amount(
                monthly_allocation_tokens, field_name="monthly_allocation_tokens", allow_zero=True
            ),
            "profit_percent": decimal_text(parse_profit_percent(profit_percent)),
            "allocation_policy": validate_allocation_policy(allocation_policy),
            "rollover_cap_tokens": _rollover_cap(rollover_cap_tokens),
            "created_at": now,
            "updated_at": now,
        }
        feature_ids = _feature_ids(features)
        try:
            async with write_transaction(self._engine) as conn:
                if await repo.plan_row(conn, name) is not None:
                    raise AlreadyExists(f"plan {name!r} already exists")
                await self._check_features_exist(conn, feature_ids)
                await repo.insert_plan(conn, values)
                for feature_id in feature_ids:
                    await repo.add_plan_feature(conn, name, feature_id)
                return await self._plan(conn, name)
        except IntegrityError:
            raise AlreadyExists(f"plan {name!r} already exists") from None

    async def update_plan(
        self,
        name: str,
        *,
        description: str | _Unset | None = UNSET,
        monthly_allocation_tokens: int | _Unset = UNSET,
        profit_percent: object = UNSET,
        features: Sequence[str] | _Unset = UNSET,
        allocation_policy: str | _Unset = UNSET,
        rollover_cap_tokens: int | _Unset | None = UNSET,
        stripe_price_id: str | _Unset | None = UNSET,
    ) -> PlanView:
        """Change the given fields; ``features`` replaces the plan's whole set. A new
        allocation or policy applies from each wallet's next renewal. A Stripe price
        makes the plan a subscription sold through Checkout (decision 14)."""
        validate_plan_name(name)
        values: dict[str, Any] = {"updated_at": self._clock()}
        if description is not UNSET:
            values["description"] = _description(description)
        if monthly_allocation_tokens is not UNSET:
            values["monthly_allocation_tokens"] = validate_amount(
                monthly_allocation_tokens, field_name="monthly_allocation_tokens", allow_zero=True
            )
        if profit_percent is not UNSET:
            values["profit_percent"] = decimal_text(parse_profit_percent(profit_percent))
        if allocation_policy is not UNSET:
            values["allocation_policy"] = validate_allocation_policy(allocation_policy)
        if rollover_cap_tokens is not UNSET:
            values["rollover_cap_tokens"] = _rollover_cap(rollover_cap_tokens)
        if stripe_price_id is not UNSET:
            validate_text(
                stripe_price_id, field_name="stripe_price_id", max_length=255, required=False
            )
            values["stripe_price_id"] = stripe_price_id or None
        feature_ids = None if features is UNSET else _feature_ids(features)
        async with write_transaction(self._engine) as conn:
            if not await repo.update_plan(conn, name, values):
                raise PlanNotFound(name)
            if feature_ids is not None:
                await self._check_features_exist(conn, feature_ids)
                await repo.clear_plan_features(conn, name)
                for feature_id in feature_ids:
                    await repo.add_plan_feature(conn, name, feature_id)
            return await self._plan(conn, name)

    async def seed_default_plans(self) -> list[PlanView]:
        """Create the embedded API's tiers that do not exist yet (Gift 100, Professional 2,000,
        Business 10,000 tokens a month; allocations expire at period end); plans
        that exist are left as they are. The plans created."""
        created = []
        for name, allocation, description in DEFAULT_PLANS:
            try:
                created.append(
                    await self.create_plan(
                        name, description=description, monthly_allocation_tokens=allocation
                    )
                )
            except AlreadyExists:
                continue
        return created

    async def delete_plan(self, name: str) -> None:
        """Delete a plan no wallet is on (move its wallets to another plan first)."""
        validate_plan_name(name)
        async with write_transaction(self._engine) as conn:
            in_use = await ledger_reads.wallets_on_plan(conn, name)
            if in_use:
                raise PlanInUse(
                    f"plan {name!r} is in use by {in_use} wallet(s): move them to another plan"
                )
            if not await repo.delete_plan(conn, name):
                raise PlanNotFound(name)

    async def add_feature_to_plan(self, plan: str, feature_id: str) -> PlanView:
        """Let the plan's users use the feature (idempotent)."""
        validate_plan_name(plan)
        validate_feature_id(feature_id)
        async with write_transaction(self._engine) as conn:
            await self._plan(conn, plan)
            await self._feature(conn, feature_id)
            await repo.add_plan_feature(conn, plan, feature_id)
            await repo.update_plan(conn, plan, {"updated_at": self._clock()})
            return await self._plan(conn, plan)

    async def remove_feature_from_plan(self, plan: str, feature_id: str) -> PlanView:
        """Take the feature out of the plan (idempotent)."""
        validate_plan_name(plan)
        validate_feature_id(feature_id)
        async with write_transaction(self._engine) as conn:
            await self._plan(conn, plan)
            await self._feature(conn, feature_id)
            if await repo.remove_plan_feature(conn, plan, feature_id):
                await repo.update_plan(conn, plan, {"updated_at": self._clock()})
            return await self._plan(conn, plan)

    # --- features ------------------------------------------------------------------------

    async def list_features(self, *, app: str | None = None) -> list[FeatureView]:
        slug = None if app is None else validate_slug(app)
        async with read_transaction(self._engine) as conn:
            return [_feature_view(row) for row in await repo.feature_rows(conn, app_slug=slug)]

    async def get_feature(self, feature_id: str) -> FeatureView:
        validate_feature_id(feature_id)
        async with read_transaction(self._engine) as conn:
            return await self._feature(conn, feature_id)

    async def create_feature(
        self,
        feature_id: str,
        *,
        name: str,
        rule: PricingRule | dict[str, Any],
        min_balance_tokens: int = 0,
        hold_tokens: int | None = None,
        profit_percent: object = None,
        app: str | None = None,
    ) -> FeatureView:
        now = self._clock()
        values = {
            "id": validate_feature_id(feature_id, field_name="id"),
            "name": _feature_name(name),
            "pricing_rule": _rule_json(rule),
            "min_balance_tokens": validate_amount(
                min_balance_tokens, field_name="min_balance_tokens", allow_zero=True
            ),
            "hold_tokens": _hold_tokens(hold_tokens),
            "profit_percent": _profit_text(profit_percent),
            "pricing_version": 1,
            "created_at": now,
            "updated_at": now,
        }
        slug = None if app is None else validate_slug(app)
        try:
            async with write_transaction(self._engine) as conn:
                if await repo.feature_row(conn, feature_id) is not None:
                    raise AlreadyExists(f"feature {feature_id!r} already exists")
                values["app_id"] = await self._app_id(conn, slug)
                await repo.insert_feature(conn, values)
                return await self._feature(conn, feature_id)
        except IntegrityError:
            raise AlreadyExists(f"feature {feature_id!r} already exists") from None

    async def update_feature(
        self,
        feature_id: str,
        *,
        name: str | _Unset = UNSET,
        rule: PricingRule | dict[str, Any] | _Unset = UNSET,
        min_balance_tokens: int | _Unset = UNSET,
        hold_tokens: int | _Unset | None = UNSET,
        profit_percent: object = UNSET,
        app: str | _Unset | None = UNSET,
    ) -> FeatureView:
        """Change the given fields (None clears an optional one).

        A changed rule or profit percentage bumps ``pricing_version``.
        """
        validate_feature_id(feature_id)
        values: dict[str, Any] = {"updated_at": self._clock()}
        if name is not UNSET:
            values["name"] = _feature_name(name)
        if rule is not UNSET:
            values["pricing_rule"] = _rule_json(rule)
        if min_balance_tokens is not UNSET:
            values["min_balance_tokens"] = validate_amount(
                min_balance_tokens, field_name="min_balance_tokens", allow_zero=True
            )
        if hold_tokens is not UNSET:
            values["hold_tokens"] = _hold_tokens(hold_tokens)
        if profit_percent is not UNSET:
            values["profit_percent"] = _profit_text(profit_percent)
        slug = None if app is UNSET or app is None else validate_slug(app)
        async with write_transaction(self._engine) as conn:
            current = await self._feature(conn, feature_id)
            if app is not UNSET:
                values["app_id"] = await self._app_id(conn, slug)
            if _pricing_changed(current, values):
                values["pricing_version"] = current.pricing_version + 1
            await repo.update_feature(conn, feature_id, values)
            return await self._feature(conn, feature_id)

    async def delete_feature(self, feature_id: str) -> None:
        """Delete a feature; it leaves every plan. Past charges keep their record."""
        validate_feature_id(feature_id)
        async with write_transaction(self._engine) as conn:
            if not await repo.delete_feature(conn, feature_id):
                raise FeatureNotFound(feature_id)

    # --- users ---------------------------------------------------------------------------

    async def set_user_plan(self, user_id: str, plan: str | None) -> str | None:
        """Put a wallet on a plan (None: on no plan). Unknown plan: InvalidInput."""
        validate_user_id(user_id)
        if plan is not None:
            validate_plan_name(plan)
        async with write_transaction(self._engine) as conn:
            if plan is not None and await repo.plan_row(conn, plan) is None:
                known = ", ".join(row.name for row in await repo.plan_rows(conn)) or "none"
                raise InvalidInput("plan", f"no plan named {plan!r} (known: {known})")
            if not await ledger_writes.set_wallet_plan(conn, user_id, plan, self._clock()):
                raise WalletNotFound(user_id)
        return plan

    async def wallet_access(self, user_id: str) -> WalletAccess | None:
        """A wallet's state and its plan's profit percentage; None without a wallet."""
        validate_user_id(user_id)
        async with read_transaction(self._engine) as conn:
            row = await ledger_reads.wallet_with_plan(conn, user_id)
        return None if row is None else _wallet_access(row)

    async def access(self, user_id: str, feature_id: str) -> Access:
        """The wallet, the feature and whether the wallet's plan includes it."""
        validate_user_id(user_id)
        validate_feature_id(feature_id)
        # Every token-process start and end asks: directly by asyncpg (db/direct.py).
        return _access(await ledger_reads.read_access_row(self._engine, user_id, feature_id))

    # --- helpers -------------------------------------------------------------------------

    async def _plan(self, conn: AsyncConnection, name: str) -> PlanView:
        row = await repo.plan_row(conn, name)
        if row is None:
            raise PlanNotFound(name)
        members = await repo.features_by_plan(conn, [name])
        return _plan_view(row, members.get(name, ()))

    async def _feature(self, conn: AsyncConnection, feature_id: str) -> FeatureView:
        row = await repo.feature_row(conn, feature_id)
        if row is None:
            raise FeatureNotFound(feature_id)
        return _feature_view(row)

    async def _check_features_exist(self, conn: AsyncConnection, feature_ids: list[str]) -> None:
        missing = set(feature_ids) - await repo.existing_feature_ids(conn, feature_ids)
        if missing:
            raise InvalidInput("features", f"unknown feature(s): {', '.join(sorted(missing))}")

    async def _app_id(self, conn: AsyncConnection, slug: str | None) -> int | None:
        if slug is None:
            return None
        app_id = await repo.app_id_by_slug(conn, slug)
        if app_id is None:
            raise InvalidInput("app", f"no app {slug!r}: register it with `tokenbank apps create`")
        return app_id


def _rule_json(rule: PricingRule | dict[str, Any]) -> dict[str, Any]:
    parsed = parse_rule(rule) if isinstance(rule, dict) else rule
    return rule_json(parsed)


def _pricing_changed(current: FeatureView, values: dict[str, Any]) -> bool:
    rule_changed = "pricing_rule" in values and values["pricing_rule"] != rule_json(current.rule)
    current_profit = _profit_text(current.profit_percent)
    profit_changed = "profit_percent" in values and values["profit_percent"] != current_profit
    return rule_changed or profit_changed


def _wallet_access(row: AnyRow) -> WalletAccess:
    profit = row.plan_profit_percent
    return WalletAccess(
        user_id=row.user_id,
        status=row.status,
        balance_tokens=int(row.balance_tokens),
        held_tokens=int(row.held_tokens),
        plan=row.plan,
        plan_profit_percent=None if profit is None else Decimal(profit),
    )


def _access(row: AnyRow) -> Access:
    return Access(
        wallet=None if row.user_id is None else _wallet_access(row),
        feature=None if row.id is None else _feature_view(row, json.loads(row.pricing_rule_json)),
        in_plan=bool(row.in_plan),  # a plan's feature exists (a foreign key)
    )
