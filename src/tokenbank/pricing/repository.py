"""All SQL of pricing: the model price overrides and the admin-editable settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.models import ModelPrice, SettingValue
from tokenbank.db.rows import AnyRow

model_prices = cast(Table, ModelPrice.__table__)
settings = cast(Table, SettingValue.__table__)


def _upsert(conn: AsyncConnection, table: Table, key: str, values: dict[str, Any]) -> Any:
    dialect_insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    statement = dialect_insert(table).values(values)
    changes = {name: value for name, value in values.items() if name != key}
    return statement.on_conflict_do_update(index_elements=[key], set_=changes)


async def model_price_rows(conn: AsyncConnection) -> list[AnyRow]:
    return list((await conn.execute(select(model_prices).order_by(model_prices.c.model))).all())


async def upsert_model_price(
    conn: AsyncConnection,
    *,
    model: str,
    input_tokens_per_unit: str,
    output_tokens_per_unit: str,
    image_tokens: int | None,
    now: datetime,
) -> None:
    values = {
        "model": model,
        "input_tokens_per_unit": input_tokens_per_unit,
        "output_tokens_per_unit": output_tokens_per_unit,
        "image_tokens": image_tokens,
        "updated_at": now,
    }
    await conn.execute(_upsert(conn, model_prices, "model", values))


async def delete_model_price(conn: AsyncConnection, model: str) -> bool:
    statement = model_prices.delete().where(model_prices.c.model == model)
    return (await conn.execute(statement)).rowcount > 0


async def setting_values(conn: AsyncConnection, keys: tuple[str, ...]) -> dict[str, Any]:
    statement = select(settings.c.key, settings.c.value).where(settings.c.key.in_(keys))
    return {row.key: row.value for row in await conn.execute(statement)}


async def upsert_setting(conn: AsyncConnection, key: str, value: Any, now: datetime) -> None:
    values = {"key": key, "value": value, "updated_at": now}
    await conn.execute(_upsert(conn, settings, "key", values))
