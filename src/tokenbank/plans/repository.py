"""All SQL of plans, features, plan membership and a wallet's plan."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.models import App, Feature, Plan, PlanFeature
from tokenbank.db.rows import AnyRow

plans = cast(Table, Plan.__table__)
features = cast(Table, Feature.__table__)
plan_features = cast(Table, PlanFeature.__table__)
apps = cast(Table, App.__table__)

FEATURE_WITH_APP = (*features.c, apps.c.slug.label("app_slug"))


# --- plans -----------------------------------------------------------------------------


async def plan_row(conn: AsyncConnection, name: str) -> AnyRow | None:
    return (await conn.execute(select(plans).where(plans.c.name == name))).first()


async def plan_by_stripe_price(conn: AsyncConnection, price_id: str) -> AnyRow | None:
    query = select(plans).where(plans.c.stripe_price_id == price_id)
    return (await conn.execute(query)).first()


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
