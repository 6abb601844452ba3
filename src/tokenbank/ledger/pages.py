"""What the signed-in user's pages read of the ledger: a wallet's live figures (polled
by the balance stream), its history a page or an export chunk at a time, and its
usage by day. Input is checked here, before any database work (decision 11).

History and usage come from the read replica when one is configured (``reads()``);
the live figures always from the primary, as a purchase or a deduct would see them.
A wallet opened moments ago may not have reached the replica yet: its history is
then empty, not "no wallet"."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.config import MAX_PAGE_SIZE
from tokenbank.db.engine import read_transaction
from tokenbank.db.reads import Freshness
from tokenbank.db.rows import AnyRow
from tokenbank.errors import InvalidInput
from tokenbank.ledger.operations import validate_operation_type
from tokenbank.ledger.repository import pages as repo
from tokenbank.ledger.service import TokenService
from tokenbank.validation import validate_user_id

MAX_OFFSET = 1_000_000
MAX_USAGE_DAYS = 366
EXPORT_CHUNK = 1_000
MAX_CHUNK = 10_000
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9998, 12, 31)
# Wallets whose settled usage is kept in memory, per process.
USAGE_CACHE_WALLETS = 1_024
# A wallet's entries older than this are summed once per process and kept
# (UserPages._kept_usage).
SETTLE_SECONDS = 5
# (wallet id, first day, last day)
UsageKey = tuple[int, str, str]
# (day, operation type, model) -> [tokens, operations]
UsageSums = dict[tuple[str, str, str], list[int]]


@dataclass(frozen=True, slots=True)
class KeptUsage:
    """A period's usage in a wallet's entries up to ``upto_id``, and how many of the
    wallet's entries (of any kind) have an id up to it."""

    upto_id: int = 0
    entries: int = 0
    usage: UsageSums = field(default_factory=dict)


def _added_usage(sums: UsageSums, rows: list[AnyRow]) -> UsageSums:
    total = {key: list(figures) for key, figures in sums.items()}
    for row in rows:
        into = total.setdefault((str(row.day), row.operation_type, str(row.model)), [0, 0])
        into[0] += int(row.tokens)
        into[1] += int(row.operations)
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryFilters:
    """The history's filters: an operation type, and a period of whole UTC days
    (``first_day`` and ``last_day`` included)."""

    operation_type: str | None = None
    first_day: date | None = None
    last_day: date | None = None

    def __post_init__(self) -> None:
        if self.operation_type is not None:
            validate_operation_type(self.operation_type)
        for name in ("first_day", "last_day"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, datetime) or not isinstance(value, date):
                raise InvalidInput(name, "must be a date")
            # The day after the last one must exist too (9999-12-31 has none).
            if not FIRST_DAY <= value <= LAST_DAY:
                raise InvalidInput(name, f"a date from {FIRST_DAY} to {LAST_DAY}")
        if self.first_day and self.last_day and self.first_day > self.last_day:
            raise InvalidInput("first_day", "must not be after the last day")

    @property
    def start(self) -> datetime | None:
        return None if self.first_day is None else _midnight(self.first_day)

    @property
    def end(self) -> datetime | None:
        """The moment after the last day (excluded)."""
        return None if self.last_day is None else _midnight(self.last_day + timedelta(days=1))


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRow:
    entry_id: int
    transaction_id: str
    created_at: datetime
    operation_type: str
    description: str | None
    amount_tokens: int
    balance_after: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRow:
    """Tokens that debits took on one UTC day, for one operation type and model
    (``model`` is "" when the charge named none)."""

    day: str
    operation_type: str
    model: str
    tokens: int
    operations: int


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _history_row(row: AnyRow) -> HistoryRow:
    return HistoryRow(
        entry_id=int(row.id),
        transaction_id=str(row.transaction_id),
        created_at=row.created_at,
        operation_type=row.operation_type,
        description=row.description,
        amount_tokens=int(row.amount_tokens),
        balance_after=int(row.balance_after),
    )


def _check_page(limit: int, offset: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput("limit", f"must be a whole number from 1 to {MAX_PAGE_SIZE}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput("offset", f"must be a whole number from 0 to {MAX_OFFSET:,}")


class UserPages:
    """The pages' reads over one TokenService. Keep one per process: it keeps what
    wallets' settled entries add up to (``_kept_usage``)."""

    def __init__(self, tokens: TokenService) -> None:
        self.tokens = tokens
        self._usage: OrderedDict[UsageKey, KeptUsage] = OrderedDict()

    async def figures(self, user_id: str) -> tuple[int, int] | None:
        """(balance, held) of the user's wallet: one indexed row, cheap to poll."""
        validate_user_id(user_id)
        async with read_transaction(await self.tokens.engine()) as conn:
            return await repo.wallet_figures(conn, user_id)

    async def freshness(self) -> Freshness:
        """How current history and usage are (the replica's lag; the primary: current)."""
        return await (await self.tokens.reads()).freshness()

    async def _not_replicated_yet(self, user_id: str) -> list[Any] | None:
        """What a read answers for a wallet the history database lacks: nothing yet
        when the primary has it (the replica is behind), else None (no wallet)."""
        if not (await self.tokens.reads()).is_replica:
            return None
        return [] if await self.figures(user_id) is not None else None

    async def history(
        self, user_id: str, filters: HistoryFilters, *, limit: int, offset: int
    ) -> list[HistoryRow] | None:
        """A page of the wallet's entries, newest first (None without a wallet)."""
        validate_user_id(user_id)
        _check_page(limit, offset)
        async with read_transaction((await self.tokens.reads()).engine) as conn:
            wallet_id = await repo.wallet_id_of(conn, user_id)
            if wallet_id is None:
                return await self._not_replicated_yet(user_id)
            rows = await repo.history(
                conn,
                wallet_id,
                operation_type=filters.operation_type,
                start=filters.start,
                end=filters.end,
                limit=limit,
                offset=offset,
            )
        return [_history_row(row) for row in rows]

    def history_chunks(
        self, user_id: str, filters: HistoryFilters, *, chunk: int = EXPORT_CHUNK
    ) -> AsyncIterator[list[HistoryRow]]:
        """The whole filtered history, newest first, a chunk per short read (an export
        never holds a connection or a snapshot while its client downloads). Checked
        now, not when the first chunk is asked for: a streamed answer has started by
        then."""
        validate_user_id(user_id)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= MAX_CHUNK:
            raise InvalidInput("chunk", f"must be a whole number from 1 to {MAX_CHUNK:,}")
        return self._chunks(user_id, filters, chunk)

    async def _chunks(
        self, user_id: str, filters: HistoryFilters, chunk: int
    ) -> AsyncIterator[list[HistoryRow]]:
        engine = (await self.tokens.reads()).engine
        async with read_transaction(engine) as conn:
            wallet_id = await repo.wallet_id_of(conn, user_id)
        before_id: int | None = None
        while wallet_id is not None:
            async with read_transaction(engine) as conn:
                rows = await repo.history(
                    conn,
                    wallet_id,
                    operation_type=filters.operation_type,
                    start=filters.start,
                    end=filters.end,
                    before_id=before_id,
                    limit=chunk,
                )
            if not rows:
                return
            yield [_history_row(row) for row in rows]
            before_id = int(rows[-1].id)

    async def usage(self, user_id: str, days: int) -> list[UsageRow] | None:
        """Usage of the last ``days`` UTC days, today included, by day, operation type
        and model (None without a wallet), sorted by those three. Exact and fresh to
        the request; ``_kept_usage`` says what is read from the database."""
        validate_user_id(user_id)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_USAGE_DAYS:
            raise InvalidInput("days", f"a whole number from 1 to {MAX_USAGE_DAYS}")
        now = self.tokens.clock()
        today = now.astimezone(UTC).date()
        since = _midnight(today - timedelta(days=days - 1))
        async with read_transaction((await self.tokens.reads()).engine) as conn:
            wallet_id = await repo.wallet_id_of(conn, user_id)
            if wallet_id is None:
                return await self._not_replicated_yet(user_id)
            key = (wallet_id, since.date().isoformat(), today.isoformat())
            kept = await self._kept_usage(conn, key, since, now)
            newest = await repo.usage_after_entry(conn, wallet_id, since, kept.upto_id, None)
        totals = _added_usage(kept.usage, newest)
        return [
            UsageRow(day=k[0], operation_type=k[1], model=k[2], tokens=v[0], operations=v[1])
            for k, v in sorted(totals.items())
        ]

    async def _kept_usage(
        self, conn: AsyncConnection, key: UsageKey, since: datetime, now: datetime
    ) -> KeptUsage:
        """The period's usage in the wallet's entries written more than SETTLE_SECONDS
        ago, kept per process and extended by the entries settled since. The ledger is
        append-only, so what entries up to an id add up to never changes; the kept sum
        also counts the wallet's entries it covers, and when the database counts more
        (a transaction that took an id below the mark committed after it was read) the
        sum is made again from the start. Only the first visit of a period (in a
        process) reads the whole period."""
        wallet_id = key[0]
        kept = self._usage.pop(key, None)
        if kept is None or await repo.wallet_entry_count(conn, wallet_id, kept.upto_id) != (
            kept.entries
        ):
            kept = KeptUsage()
        before = now - timedelta(seconds=SETTLE_SECONDS)
        mark = await repo.wallet_settled_mark(conn, wallet_id, kept.upto_id, before)
        if mark > kept.upto_id:
            # Counted before it is summed (above: a late commit makes a difference).
            count = await repo.wallet_entry_count(conn, wallet_id, mark)
            if kept.upto_id == 0:
                rows = await repo.usage_by_day(conn, wallet_id, since, upto_id=mark)
            else:
                rows = await repo.usage_after_entry(conn, wallet_id, since, kept.upto_id, mark)
            kept = KeptUsage(mark, count, _added_usage(kept.usage, rows))
        self._usage[key] = kept  # the most recently used last
        while len(self._usage) > USAGE_CACHE_WALLETS:
            self._usage.popitem(last=False)
        return kept
