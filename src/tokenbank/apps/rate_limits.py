"""Request rate limits of API keys, shared by every process over one database (issue 14).

A limited key may make ``rate_limit_per_minute`` requests in each fixed UTC minute.
The minute's count lives in the database (``api_key_request_counts``), so any number
of ``tokenbank serve`` processes share it. Paying a database write on every request
would cost each limited request a round trip and a commit, so a process **claims
requests in lots**: one atomic upsert adds a lot to the minute's claims and answers the
total, from which the process knows exactly which part of the lot is within the limit
(claims are handed out as disjoint ranges of the count, under the row's lock). It
serves that many from memory and claims again when they are used up.

So no minute ever serves more than the limit across all processes. The price: a
process may end a minute with part of its lot unused, which another process then
cannot have; with lots of 1/``RATE_LIMIT_LOTS_PER_MINUTE`` of the limit (1 for limits
below that), each process leaves at most one lot. Keys without a limit never reach
this module.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank.apps import repository as repo
from tokenbank.clock import Clock, system_clock
from tokenbank.config import RATE_LIMIT_LOTS_PER_MINUTE
from tokenbank.db.engine import write_transaction

WINDOW_SECONDS = 60


@dataclass(slots=True)
class _Allowance:
    """What this process may still serve of one key's current window."""

    window_start: datetime
    requests: int = 0
    # The window's claims reached the limit: refuse without asking the database again.
    exhausted: bool = False


def window_start_of(now: datetime) -> datetime:
    moment = now.astimezone(UTC)
    return moment.replace(second=0, microsecond=0)


def seconds_until_next_window(now: datetime) -> int:
    """``Retry-After``: whole seconds until the window frees, at least 1."""
    ends = window_start_of(now) + timedelta(seconds=WINDOW_SECONDS)
    return max(1, math.ceil((ends - now).total_seconds()))


def lot_size(limit: int) -> int:
    return max(1, limit // RATE_LIMIT_LOTS_PER_MINUTE)


def granted_of(claimed_after: int, lot: int, limit: int) -> int:
    """How much of a lot that took the claims to ``claimed_after`` is within ``limit``."""
    claimed_before = claimed_after - lot
    return max(0, min(lot, limit - claimed_before))


class RateLimiter:
    def __init__(self, engine: AsyncEngine, *, clock: Clock = system_clock) -> None:
        self._engine = engine
        self._clock = clock
        self._allowances: dict[int, _Allowance] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def admit(self, key_id: int, limit: int) -> int | None:
        """None if the key may make one more request now; else seconds to wait."""
        now = self._clock()
        window = window_start_of(now)
        if self._take(key_id, window):
            return None
        lock = self._locks.setdefault(key_id, asyncio.Lock())
        async with lock:
            # Another request may have claimed a lot while this one waited.
            if self._take(key_id, window):
                return None
            if not self._exhausted(key_id, window):
                await self._claim(key_id, window, limit)
            if self._take(key_id, window):
                return None
        return seconds_until_next_window(now)

    def _exhausted(self, key_id: int, window: datetime) -> bool:
        allowance = self._allowances.get(key_id)
        return allowance is not None and allowance.window_start == window and allowance.exhausted

    def _take(self, key_id: int, window: datetime) -> bool:
        allowance = self._allowances.get(key_id)
        if allowance is None or allowance.window_start != window or allowance.requests <= 0:
            return False
        allowance.requests -= 1
        return True

    async def _claim(self, key_id: int, window: datetime, limit: int) -> None:
        allowance = self._allowances.get(key_id)
        new_window = allowance is None or allowance.window_start != window
        lot = lot_size(limit)
        async with write_transaction(self._engine) as conn:
            if new_window:
                await repo.forget_windows_before(conn, key_id=key_id, window_start=window)
            claimed = await repo.claim_requests(
                conn, key_id=key_id, window_start=window, requests=lot
            )
        granted = granted_of(claimed, lot, limit)
        if new_window or allowance is None:
            allowance = self._allowances[key_id] = _Allowance(window_start=window)
        allowance.requests += granted
        allowance.exhausted = claimed >= limit
