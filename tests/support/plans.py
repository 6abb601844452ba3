"""The query plans of what a read runs, as the database would run them: each SELECT it
sends is captured, then explained with the same parameters (SQLite's EXPLAIN QUERY
PLAN, PostgreSQL's EXPLAIN)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank import TokenService


async def plans_of(
    service: TokenService, read: Callable[[], Awaitable[None]], *, naming: str = ""
) -> list[str]:
    """The plan of every SELECT that ``read()`` runs (that names ``naming``)."""
    statements: list[tuple[str, Any]] = []
    engine = await service.engine()

    def capture(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.lstrip().upper().startswith("SELECT") and naming in sql:
            statements.append((sql, params))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        await read()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    assert statements, "the read ran no such SELECT"
    async with engine.connect() as conn:
        return [await _plan(conn, sql, params) for sql, params in statements]


async def _plan(conn: AsyncConnection, sql: str, params: Any) -> str:
    prefix = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
    rows = await conn.exec_driver_sql(prefix + sql, tuple(params))
    return "\n".join(str(row[-1]) for row in rows)
