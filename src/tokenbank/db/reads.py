"""Where history is read: a read replica when ``TOKENBANK_READ_DATABASE_URL`` names one,
else the primary (docs/operations.md, "The read replica").

``ReadHandle`` is a second engine held next to the primary's, and nothing more: code
that reads history, statistics, dashboards and exports asks for it by name
(``await tokens.reads()``); code that decides money (a deduct's balance, holds,
idempotency, the live balance a purchase checks) keeps using the primary engine.
There is no router guessing from a statement which database it may go to.

A replica is behind its primary by however much WAL it has received and not yet
replayed. ``freshness()`` says so, with the commit time of the last transaction it
replayed, so that a page can show "figures as of HH:MM:SS" instead of silently
showing old figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank.db.engine import read_transaction

# On a standby: has WAL arrived that is not applied yet, and when was the last
# transaction applied committed. On a primary both functions answer NULL. A busy,
# healthy replica is always a few milliseconds behind: it counts as behind only when
# its last replayed commit is older than the tolerance too.
_REPLAY_STATE = text(
    "SELECT pg_is_in_recovery() AS standby,"
    " COALESCE(pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn(), false)"
    " AND COALESCE(clock_timestamp() - pg_last_xact_replay_timestamp()"
    " > make_interval(secs => :tolerance_seconds), true) AS behind,"
    " pg_last_xact_replay_timestamp() AS replayed_at"
)


@dataclass(frozen=True, slots=True)
class Freshness:
    """How current a replica's figures are. ``behind`` False: as current as the primary
    (as far as the replica knows); True: recent changes may be missing, and the figures
    are those of ``as_of`` (None when no transaction has been replayed yet)."""

    behind: bool
    as_of: datetime | None = None

    def note(self) -> str | None:
        """What a page says about its figures: nothing when current."""
        if not self.behind:
            return None
        if self.as_of is None:
            return "The read replica is catching up: the newest activity may not show yet."
        moment = self.as_of.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        return f"Figures as of {moment} UTC: the newest activity may not show yet."


CURRENT = Freshness(behind=False)


class ReadHandle:
    """The engine history reads use, and how fresh what it answers is."""

    def __init__(
        self,
        primary: AsyncEngine,
        replica: AsyncEngine | None = None,
        *,
        lag_tolerance_seconds: float = 0.0,
    ) -> None:
        self._primary = primary
        self._replica = replica
        self._lag_tolerance_seconds = lag_tolerance_seconds

    @property
    def engine(self) -> AsyncEngine:
        return self._replica if self._replica is not None else self._primary

    @property
    def is_replica(self) -> bool:
        return self._replica is not None

    async def freshness(self) -> Freshness:
        """The primary is always current; a replica is asked (one cheap query)."""
        if self._replica is None or self._replica.dialect.name != "postgresql":
            return CURRENT
        async with read_transaction(self._replica) as conn:
            tolerance = {"tolerance_seconds": self._lag_tolerance_seconds}
            row = (await conn.execute(_REPLAY_STATE, tolerance)).one()
        if not row.standby or not row.behind:
            return CURRENT
        return Freshness(behind=True, as_of=row.replayed_at)

    async def dispose(self) -> None:
        """Close the replica's connections (the primary belongs to its service)."""
        if self._replica is not None:
            await self._replica.dispose()
