"""All SQL of plans, features, plan membership and a wallet's plan."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.models import App, Feature, Plan, PlanFeature
from tokenbank.ledger.repository import AnyRow, entries, holds, transactions, wallets

plans = cast(Table, Plan.__table__)
features = cast(Table, Feature.__table__)
plan_features = cast(Table, PlanFeature.__table__)
apps = cast(Table, App.__table__)

FEATURE_WITH_APP = (*features.c, apps.c.slug.label("app_slug"))


# --- plans -----------------------------------------------------------------------------


async def plan_row(conn: AsyncConnection, name: str) -> AnyRow | None:
    return (await conn.execute(select(plans).where(plans.c.name == name))).first()


async def plan_rows(conn: AsyncConnection) -> list[AnyRow]:
    return list((await conn.execute(select(plans).order_by(plans.c.name))).all())


async def insert_plan(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(plans).values(values))


async def update_plan(conn: AsyncConnection, name: str, values: dict[str, Any]) -> bool:
    statement = update(plans).where(plans.c.name == name).values(values)
    return (await conn.execute(statement)).rowcount > 0


async def delete_plan(conn: AsyncConnection, name: str) -> bool:
    # Memberships go by ON DELETE CASCADE; a plan that wallets are on is refused
    # by a foreign key (PostgreSQL) or a trigger (SQLite), and checked first.
    return (await conn.execute(delete(plans).where(plans.c.name == name))).rowcount > 0


async def wallets_on_plan(conn: AsyncConnection, name: str) -> int:
    statement = select(func.count()).select_from(wallets).where(wallets.c.plan == name)
    return int((await conn.execute(statement)).scalar_one())


async def features_by_plan(
    conn: AsyncConnection, names: list[str] | None = None
) -> dict[str, list[str]]:
    statement = select(plan_features).order_by(
        plan_features.c.plan_name, plan_features.c.feature_id
    )
    if names is not None:
        statement = statement.where(plan_features.c.plan_name.in_(names))
    found: dict[str, list[str]] = {}
    for row in await conn.execute(statement):
        found.setdefault(row.plan_name, []).append(row.feature_id)
    return found


async def add_plan_feature(conn: AsyncConnection, plan: str, feature_id: str) -> None:
    dialect_insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    statement = (
        dialect_insert(plan_features)
        .values(plan_name=plan, feature_id=feature_id)
        .on_conflict_do_nothing(index_elements=["plan_name", "feature_id"])
    )
    await conn.execute(statement)


async def remove_plan_feature(conn: AsyncConnection, plan: str, feature_id: str) -> bool:
    statement = delete(plan_features).where(
        plan_features.c.plan_name == plan, plan_features.c.feature_id == feature_id
    )
    return (await conn.execute(statement)).rowcount > 0


async def clear_plan_features(conn: AsyncConnection, plan: str) -> None:
    await conn.execute(delete(plan_features).where(plan_features.c.plan_name == plan))


async def plan_has_feature(conn: AsyncConnection, plan: str, feature_id: str) -> bool:
    statement = select(plan_features.c.feature_id).where(
        plan_features.c.plan_name == plan, plan_features.c.feature_id == feature_id
    )
    return (await conn.execute(statement)).first() is not None


# --- features --------------------------------------------------------------------------


def _features_with_app() -> Any:
    return select(*FEATURE_WITH_APP).outerjoin(apps, apps.c.id == features.c.app_id)


async def feature_row(conn: AsyncConnection, feature_id: str) -> AnyRow | None:
    statement = _features_with_app().where(features.c.id == feature_id)
    return (await conn.execute(statement)).first()


async def feature_rows(conn: AsyncConnection, *, app_slug: str | None = None) -> list[AnyRow]:
    statement = _features_with_app().order_by(features.c.id)
    if app_slug is not None:
        statement = statement.where(apps.c.slug == app_slug)
    return list((await conn.execute(statement)).all())


async def existing_feature_ids(conn: AsyncConnection, feature_ids: list[str]) -> set[str]:
    statement = select(features.c.id).where(features.c.id.in_(feature_ids))
    return {row.id for row in await conn.execute(statement)}


async def insert_feature(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(features).values(values))


async def update_feature(conn: AsyncConnection, feature_id: str, values: dict[str, Any]) -> bool:
    statement = update(features).where(features.c.id == feature_id).values(values)
    return (await conn.execute(statement)).rowcount > 0


async def delete_feature(conn: AsyncConnection, feature_id: str) -> bool:
    statement = delete(features).where(features.c.id == feature_id)
    return (await conn.execute(statement)).rowcount > 0


async def app_id_by_slug(conn: AsyncConnection, slug: str) -> int | None:
    found = (await conn.execute(select(apps.c.id).where(apps.c.slug == slug))).scalar()
    return int(found) if found is not None else None


# --- wallets ---------------------------------------------------------------------------


async def set_wallet_plan(
    conn: AsyncConnection, user_id: str, plan: str | None, now: datetime
) -> bool:
    statement = (
        update(wallets).where(wallets.c.user_id == user_id).values(plan=plan, updated_at=now)
    )
    return (await conn.execute(statement)).rowcount > 0


async def wallet_with_plan(conn: AsyncConnection, user_id: str) -> AnyRow | None:
    """A wallet's state and its plan's profit percentage (None without a plan)."""
    statement = (
        select(
            wallets.c.user_id,
            wallets.c.status,
            wallets.c.balance_tokens,
            wallets.c.held_tokens,
            wallets.c.plan,
            plans.c.profit_percent.label("plan_profit_percent"),
        )
        .outerjoin(plans, plans.c.name == wallets.c.plan)
        .where(wallets.c.user_id == user_id)
    )
    return (await conn.execute(statement)).first()


# --- the ledger, read for retries of the token process -----------------------------------


async def usage_by_key(conn: AsyncConnection, scope: str, key: str) -> AnyRow | None:
    """The debit an idempotency key recorded: its pricing record and wallet amount."""
    condition = and_(
        transactions.c.idempotency_scope == scope, transactions.c.idempotency_key == key
    )
    return await _usage(conn, condition)


async def usage_by_hold(conn: AsyncConnection, hold_id: str) -> AnyRow | None:
    """The debit that captured a hold: its pricing record and wallet amount."""
    return await _usage(conn, transactions.c.hold_id == hold_id)


async def _usage(conn: AsyncConnection, condition: Any) -> AnyRow | None:
    statement = (
        select(
            transactions.c.id,
            transactions.c.pricing,
            transactions.c.hold_id,
            (-entries.c.amount_tokens).label("amount_tokens"),
            entries.c.balance_after,
            wallets.c.user_id,
        )
        .join(entries, entries.c.transaction_id == transactions.c.id)
        .join(wallets, wallets.c.id == entries.c.wallet_id)
        .where(condition)
    )
    return (await conn.execute(statement)).first()


async def hold_id_by_key(conn: AsyncConnection, scope: str, key: str) -> str | None:
    """The hold a token process start placed under an idempotency key."""
    statement = select(holds.c.id).where(
        holds.c.idempotency_scope == scope, holds.c.idempotency_key == key
    )
    found = (await conn.execute(statement)).scalar()
    return None if found is None else str(found)
