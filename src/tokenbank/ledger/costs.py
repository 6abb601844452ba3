"""The cost table (operation type -> tokens), cached in memory for the hot path.

Edits made through this process refresh the cache at once; edits made by another
process are seen within ``refresh_seconds``, and an unknown type always re-reads
the table before it is refused.
"""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank.db.engine import read_transaction
from tokenbank.errors import InvalidInput
from tokenbank.ledger.repository import writes as repo

COST_CACHE_REFRESH_SECONDS = 5.0


class CostTable:
    def __init__(self, engine: AsyncEngine, *, refresh_seconds: float = COST_CACHE_REFRESH_SECONDS):
        self._engine = engine
        self._refresh_seconds = refresh_seconds
        self._costs: dict[str, int] = {}
        self._loaded_at: float | None = None

    async def all(self) -> dict[str, int]:
        if self._is_stale():
            await self.reload()
        return dict(self._costs)

    async def cost_of(self, operation_type: str) -> int:
        if self._is_stale() or operation_type not in self._costs:
            await self.reload()
        cost = self._costs.get(operation_type)
        if cost is None:
            known = ", ".join(sorted(self._costs)) or "none"
            raise InvalidInput(
                "operation_type", f"unknown operation type {operation_type!r} (known: {known})"
            )
        return cost

    async def is_known(self, operation_type: str) -> bool:
        if operation_type not in self._costs:
            await self.reload()
        return operation_type in self._costs

    async def reload(self) -> None:
        async with read_transaction(self._engine) as conn:
            self._costs = await repo.all_costs(conn)
        self._loaded_at = time.monotonic()

    def _is_stale(self) -> bool:
        return self._loaded_at is None or time.monotonic() - self._loaded_at > self._refresh_seconds
