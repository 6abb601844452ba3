"""The embedded API (the embedded API): the whole ledger in-process, for a monolith.

``TokenService`` validates input (raising :class:`InvalidInput`), hands operations
to the one write path, and after each commit runs the caller's callbacks: cache
invalidation for every user whose balance changed, and one metrics record per
operation.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank.clock import Clock, system_clock
from tokenbank.config import (
    DEFAULT_PAGE_SIZE,
    MAX_GRANT_DAYS,
    MAX_PAGE_SIZE,
    Settings,
    get_settings,
)
from tokenbank.db.engine import (
    create_engine,
    read_transaction,
    snapshot_read,
    write_transaction,
)
from tokenbank.db.migrate import upgrade
from tokenbank.db.reads import ReadHandle
from tokenbank.errors import IdempotencyConflict, InvalidInput
from tokenbank.ledger import measure
from tokenbank.ledger.accounts import RESERVED_OPERATION_TYPES, USAGE
from tokenbank.ledger.costs import CostTable
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.grants import DEFAULT_GRANT_PRIORITY
from tokenbank.ledger.group_commit import GroupCommitter
from tokenbank.ledger.operations import (
    CaptureHold,
    ClawBack,
    Credit,
    Debit,
    OpenWallet,
    Operation,
    PlaceHold,
    Refund,
    SpendCap,
    VoidHold,
    validate_hold_id,
    validate_operation_type,
)
from tokenbank.ledger.repository import reads as queries
from tokenbank.ledger.repository import writes as repo
from tokenbank.ledger.repository.audit import run_audit
from tokenbank.ledger.results import (
    Affordability,
    AuditReport,
    BalanceInfo,
    ClawbackResult,
    GrantView,
    HoldResult,
    HoldView,
    LedgerEntryView,
    LedgerResult,
    OperationResult,
    ScheduledCreditView,
    UserStatistics,
    WalletResult,
)
from tokenbank.ledger.writer import LedgerWriter
from tokenbank.validation import validate_amount, validate_text, validate_user_id

logger = logging.getLogger("tokenbank")

CacheInvalidationCallback = Callable[[str], Awaitable[None] | None]
MetricsCallback = Callable[["OperationMetrics"], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class OperationMetrics:
    """One record per operation, handed to ``metrics_callback``."""

    operation: str
    user_id: str | None
    amount: int | None
    success: bool
    error: str | None
    error_code: str | None
    duration_ms: float
    replayed: bool


OPERATION_NAMES: dict[type, str] = {
    OpenWallet: "open_wallet",
    Credit: "credit",
    Debit: "debit",
    Refund: "refund",
    ClawBack: "claw_back",
    PlaceHold: "hold",
    CaptureHold: "capture",
    VoidHold: "void",
}


def _validate_page(limit: int, offset: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput("limit", f"must be a whole number from 1 to {MAX_PAGE_SIZE}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput("offset", "must be a whole number of at least 0")


def _validate_period(start_date: datetime | None, end_date: datetime | None) -> None:
    for name, value in (("start_date", start_date), ("end_date", end_date)):
        if value is None:
            continue
        if not isinstance(value, datetime):
            raise InvalidInput(name, "must be a datetime")
        if value.tzinfo is None:
            raise InvalidInput(name, "must be timezone-aware")
    if start_date and end_date and start_date > end_date:
        raise InvalidInput("start_date", "must not be after end_date")


class LedgerView:
    """Read access to one user's history (the embedded API's ``getLedger()``), from the
    read replica when one is configured (it may be a little behind the primary)."""

    def __init__(self, service: TokenService) -> None:
        self._service = service

    async def get_user_entries(
        self,
        user_id: str,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        offset: int = 0,
        operation_type: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> list[LedgerEntryView]:
        validate_user_id(user_id)
        _validate_page(limit, offset)
        if operation_type is not None:
            validate_operation_type(operation_type)
        _validate_period(start_date, end_date)
        async with read_transaction((await self._service.reads()).engine) as conn:
            return await queries.user_entries(
                conn,
                user_id,
                limit=limit,
                offset=offset,
                operation_type=operation_type,
                start_date=start_date,
                end_date=end_date,
            )

    async def get_user_statistics(
        self,
        user_id: str,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> UserStatistics:
        validate_user_id(user_id)
        _validate_period(start_date, end_date)
        async with read_transaction((await self._service.reads()).engine) as conn:
            return await queries.user_statistics(
                conn, user_id, start_date=start_date, end_date=end_date
            )


class TokenService:
    """Wallets, credits, debits, refunds and holds over one database.

    Use it as an async context manager, or call :meth:`close` when done. The schema
    is migrated on first use unless ``auto_migrate`` is False.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: Settings | None = None,
        engine: AsyncEngine | None = None,
        clock: Clock = system_clock,
        cache_invalidation_callback: CacheInvalidationCallback | None = None,
        metrics_callback: MetricsCallback | None = None,
        welcome_bonus_tokens: int | None = None,
        auto_migrate: bool = True,
        read_database_url: str | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self._database_url = database_url or self.settings.database_url
        self._read_database_url = read_database_url or self.settings.read_database_url
        self._engine = engine
        self._reads: ReadHandle | None = None
        self._owns_engine = engine is None
        self.clock = clock
        self._cache_invalidation_callback = cache_invalidation_callback
        self._metrics_callback = metrics_callback
        bonus = self.settings.welcome_bonus_tokens
        self.welcome_bonus_tokens = bonus if welcome_bonus_tokens is None else welcome_bonus_tokens
        validate_amount(self.welcome_bonus_tokens, field_name="welcome_bonus", allow_zero=True)
        self._auto_migrate = auto_migrate
        self._ready = asyncio.Lock()
        self._started = False
        self._writer: LedgerWriter | None = None
        self._committer: GroupCommitter | None = None
        self._costs: CostTable | None = None

    # --- lifecycle -------------------------------------------------------------------

    async def engine(self) -> AsyncEngine:
        if not self._started:
            await self._start()
        assert self._engine is not None  # set by _start
        return self._engine

    async def reads(self) -> ReadHandle:
        """Where history, statistics, dashboards and exports are read: the replica of
        ``TOKENBANK_READ_DATABASE_URL``, else the primary. Never for what decides money."""
        await self.engine()
        assert self._reads is not None  # set by _start
        return self._reads

    async def _start(self) -> None:
        async with self._ready:
            if self._started:
                return
            if self._engine is None:
                self._engine = create_engine(self._database_url, self.settings)
            # The replica's engine too (a bad URL fails here, at start); it connects
            # when history is first read.
            url = self._read_database_url
            replica = create_engine(url, self.settings) if url else None
            tolerance = self.settings.read_lag_tolerance_seconds
            self._reads = ReadHandle(self._engine, replica, lag_tolerance_seconds=tolerance)
            if self._auto_migrate:
                await upgrade(self._engine)
            self._writer = LedgerWriter(self._engine, clock=self.clock)
            if self.settings.group_commit:
                # SQLite has one writer at a time; PostgreSQL overlaps a few batches.
                inflight = (
                    1
                    if self._engine.dialect.name == "sqlite"
                    else (self.settings.group_commit_inflight_batches)
                )
                self._committer = GroupCommitter(
                    self._writer,
                    max_batch_operations=self.settings.group_commit_max_batch_operations,
                    max_inflight_batches=inflight,
                )
            self._costs = CostTable(self._engine)
            self._started = True

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer.wait_idle()
        if self._engine is not None and self._owns_engine:
            await self._engine.dispose()
        reads, self._reads = self._reads, None
        if reads is not None:
            await reads.dispose()
        self._started = False

    async def __aenter__(self) -> Self:
        await self.engine()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _parts(self) -> tuple[LedgerWriter, CostTable]:
        await self.engine()
        if self._writer is None or self._costs is None:
            raise RuntimeError("TokenService failed to start")
        return self._writer, self._costs

    # --- the write path ----------------------------------------------------------------

    async def apply(self, operations: Sequence[Operation]) -> list[LedgerResult]:
        """Apply a batch of operations in one transaction (each outcome independent)."""
        writer, _ = await self._parts()
        started = time.perf_counter()
        try:
            results = await writer.apply(operations)
        except Exception:
            for operation in operations:
                measure.count(OPERATION_NAMES[type(operation)], "error")
            raise
        duration_ms = (time.perf_counter() - started) * 1000
        for operation, result in zip(operations, results, strict=True):
            await self._after_commit(operation, result, duration_ms)
        return results

    async def _apply(self, operation: Operation) -> LedgerResult:
        """Apply one operation, through group commit when it is on."""
        await self._parts()
        if self._committer is None:
            result = (await self.apply([operation]))[0]
        else:
            started = time.perf_counter()
            try:
                result = await self._committer.submit(operation)
            except Exception:
                measure.count(OPERATION_NAMES[type(operation)], "error")
                raise
            await self._after_commit(operation, result, (time.perf_counter() - started) * 1000)
        if result.error_code == ErrorCode.IDEMPOTENCY_CONFLICT:
            raise IdempotencyConflict(operation.idempotency_key or "")
        return result

    async def _after_commit(
        self, operation: Operation, result: LedgerResult, duration_ms: float
    ) -> None:
        measure.count(OPERATION_NAMES[type(operation)], measure.outcome_of(result))
        user_id = getattr(result, "user_id", None) or operation.user_key
        if result.success and not result.replayed and user_id is not None:
            await self._call(self._cache_invalidation_callback, user_id)
        if self._metrics_callback is not None:
            record = OperationMetrics(
                operation=OPERATION_NAMES[type(operation)],
                user_id=user_id,
                amount=getattr(operation, "amount_tokens", None),
                success=result.success,
                error=result.error,
                error_code=str(result.error_code) if result.error_code else None,
                duration_ms=duration_ms,
                replayed=result.replayed,
            )
            await self._call(self._metrics_callback, record)

    @staticmethod
    async def _call(callback: Callable[[Any], Awaitable[None] | None] | None, arg: Any) -> None:
        # A callback must never undo or hide a committed operation: log and go on.
        if callback is None:
            return
        try:
            outcome = callback(arg)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            logger.exception("tokenbank callback %r failed", callback)

    # --- wallets -----------------------------------------------------------------------

    async def open_wallet(self, user_id: str) -> WalletResult:
        """Open a wallet (idempotent); a new wallet receives the welcome bonus once."""
        days = self.settings.welcome_bonus_expiry_days
        expires_at = self.clock() + timedelta(days=days) if days is not None else None
        op = OpenWallet(
            user_id=user_id,
            welcome_bonus_tokens=self.welcome_bonus_tokens,
            welcome_bonus_expires_at=expires_at,
        )
        result = await self._apply(op)
        assert isinstance(result, WalletResult)
        return result

    async def get_balance(self, user_id: str) -> BalanceInfo | None:
        """The balance, with what it is made of: paid and promotional tokens, and the
        next expiry. Expired tokens leave at the next spend or sweep."""
        validate_user_id(user_id)
        return await queries.read_balance(await self.engine(), user_id)

    async def get_grants(
        self, user_id: str, *, limit: int = DEFAULT_PAGE_SIZE, offset: int = 0
    ) -> list[GrantView] | None:
        """A wallet's grants, newest first (None for an unknown user)."""
        validate_user_id(user_id)
        _validate_page(limit, offset)
        async with read_transaction(await self.engine()) as conn:
            if await repo.wallet_by_user(conn, user_id) is None:
                return None
            return await queries.wallet_grants(
                conn, user_id, self.clock(), limit=limit, offset=offset
            )

    async def get_scheduled_credits(
        self, user_id: str, *, limit: int = DEFAULT_PAGE_SIZE
    ) -> list[ScheduledCreditView] | None:
        """A wallet's credits that wait for their time, soonest first (None for an
        unknown user)."""
        validate_user_id(user_id)
        _validate_page(limit, 0)
        async with read_transaction(await self.engine()) as conn:
            wallet = await repo.wallet_by_user(conn, user_id)
            if wallet is None:
                return None
            return await queries.waiting_scheduled_credits(conn, wallet, limit=limit)

    async def apply_scheduled_credits(self) -> int:
        """Apply the scheduled credits whose time has come (a spend that needs one
        applies it anyway); how many wallets were looked at. The sweeps run it."""
        writer, _ = await self._parts()
        return await writer.apply_scheduled_credits()

    async def expire_grants(self) -> int:
        """Expire what expired grants hold, wallet by wallet (what holds need stays);
        how many wallets were looked at. ``tokenbank serve`` runs it periodically."""
        writer, _ = await self._parts()
        return await writer.expire_grants()

    async def set_wallet_status(self, user_id: str, status: str) -> BalanceInfo | None:
        """Suspend, close or reactivate a wallet (an admin action)."""
        validate_user_id(user_id)
        if status not in ("active", "suspended", "closed"):
            raise InvalidInput("status", "must be active, suspended or closed")
        reason = "admin" if status == "suspended" else None
        try:
            async with write_transaction(await self.engine()) as conn:
                updated = await repo.set_wallet_status(conn, user_id, status, reason, self.clock())
                info = await queries.balance(conn, user_id) if updated else None
        except IntegrityError:
            # The database refused an active wallet with less than it holds.
            raise InvalidInput(
                "status", "an overdrawn wallet can only be active again once topped up"
            ) from None
        if info is None:
            return None
        await self._call(self._cache_invalidation_callback, user_id)
        return info

    # --- money in and out --------------------------------------------------------------

    async def credit(
        self,
        user_id: str,
        *,
        amount: int,
        operation_type: str = "purchase",
        metadata: dict[str, Any] | None = None,
        description: str | None = None,
        idempotency_key: str | None = None,
        idempotency_scope: str = "",
        category: str | None = None,
        priority: int = DEFAULT_GRANT_PRIORITY,
        expires_at: datetime | None = None,
        effective_at: datetime | None = None,
    ) -> OperationResult:
        """Add tokens as one grant: ``category`` (``paid`` or ``promotional``; by
        default purchases are paid), ``priority`` (0-100, lower is spent first) and
        ``expires_at`` (None: never) decide when debits consume it. With
        ``effective_at`` in the future the credit is scheduled: the answer carries
        ``scheduled_credit_id`` and the balance is unchanged until then."""
        op = Credit(
            user_id=user_id,
            amount_tokens=amount,
            operation_type=operation_type,
            metadata=metadata,
            description=description,
            idempotency_key=idempotency_key,
            idempotency_scope=idempotency_scope,
            category=category,
            priority=priority,
            expires_at=expires_at,
            effective_at=effective_at,
        )
        now = self.clock()
        if expires_at is not None and expires_at <= now and not await self._keyed(op):
            # (A retry of a credit that was made answers as it did, expired since or not.)
            raise InvalidInput("expires_at", "must be in the future")
        if effective_at is not None and effective_at > now + timedelta(days=MAX_GRANT_DAYS):
            raise InvalidInput("effective_at", f"must be within {MAX_GRANT_DAYS} days")
        return await self._operation(op)

    async def _keyed(self, op: Credit) -> bool:
        """Whether the operation's idempotency key was used already."""
        if op.idempotency_key is None:
            return False
        async with read_transaction(await self.engine()) as conn:
            found = await repo.registered_key(conn, op.idempotency_scope, op.idempotency_key)
        return found is not None

    async def debit(
        self,
        user_id: str,
        *,
        amount: int,
        operation_type: str = USAGE,
        metadata: dict[str, Any] | None = None,
        description: str | None = None,
        idempotency_key: str | None = None,
        idempotency_scope: str = "",
        allow_overdraft: bool = False,
        pricing: dict[str, Any] | None = None,
        spend_cap: SpendCap | None = None,
    ) -> OperationResult:
        """Debit a wallet; with ``spend_cap``, only within the key's cap for the UTC day."""
        op = Debit(
            user_id=user_id,
            amount_tokens=amount,
            operation_type=operation_type,
            metadata=metadata,
            description=description,
            idempotency_key=idempotency_key,
            idempotency_scope=idempotency_scope,
            allow_overdraft=allow_overdraft,
            pricing=pricing,
            spend_cap=spend_cap,
        )
        await self._check_debit_type(op.operation_type)
        return await self._operation(op)

    async def refund(
        self,
        user_id: str,
        amount: int,
        metadata: dict[str, Any] | None = None,
        *,
        refund_of: str | None = None,
        description: str | None = None,
        idempotency_key: str | None = None,
        idempotency_scope: str = "",
    ) -> OperationResult:
        op = Refund(
            user_id=user_id,
            amount_tokens=amount,
            refund_of=refund_of,
            metadata=metadata,
            description=description,
            idempotency_key=idempotency_key,
            idempotency_scope=idempotency_scope,
        )
        return await self._operation(op)

    async def claw_back(
        self,
        user_id: str,
        *,
        credit_transaction_id: str,
        amount: int,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        idempotency_scope: str = "",
    ) -> ClawbackResult:
        """Take back at most ``amount`` of what is left of the grant that the credit
        ``credit_transaction_id`` made (a refunded or disputed purchase), and nothing
        from any other grant or of what pending holds need (decision 13). The answer
        says what was taken (``clawed_tokens``, a ``clawback`` transaction unless 0)
        and what was not (``not_clawed_tokens``: the caller's loss to report)."""
        op = ClawBack(
            user_id=user_id,
            credit_transaction_id=credit_transaction_id,
            amount_tokens=amount,
            description=description,
            metadata=metadata,
            idempotency_key=idempotency_key,
            idempotency_scope=idempotency_scope,
        )
        result = await self._apply(op)
        assert isinstance(result, ClawbackResult)
        return result

    async def _operation(self, op: Credit | Debit | Refund) -> OperationResult:
        result = await self._apply(op)
        assert isinstance(result, OperationResult)
        return result

    async def _check_debit_type(self, operation_type: str) -> None:
        _, costs = await self._parts()
        if operation_type != USAGE and not await costs.is_known(operation_type):
            raise InvalidInput(
                "operation_type",
                f"unknown operation type {operation_type!r}: use 'usage' or a type"
                " from the cost table",
            )

    # --- priced operations (the cost table) --------------------------------------------

    async def can_afford(self, user_id: str, operation_type: str) -> Affordability:
        validate_user_id(user_id)
        validate_operation_type(operation_type)
        _, costs = await self._parts()
        cost = await costs.cost_of(operation_type)
        balance = await self.get_balance(user_id)
        if balance is None:
            return Affordability(
                can_afford=False,
                cost=cost,
                balance=0,
                available=0,
                deficit=cost,
                error_code=ErrorCode.WALLET_NOT_FOUND,
            )
        active = balance.status == "active"
        status_codes = {"suspended": ErrorCode.WALLET_SUSPENDED, "closed": ErrorCode.WALLET_CLOSED}
        return Affordability(
            can_afford=active and balance.available >= cost,
            cost=cost,
            balance=balance.tokens_balance,
            available=balance.available,
            deficit=max(0, cost - balance.available),
            error_code=status_codes.get(balance.status),
        )

    async def charge_for_operation(
        self,
        user_id: str,
        operation_type: str,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        *,
        description: str | None = None,
        idempotency_scope: str = "",
    ) -> OperationResult:
        """Debit the cost-table price of ``operation_type``."""
        validate_operation_type(operation_type)
        _, costs = await self._parts()
        cost = await costs.cost_of(operation_type)
        op = Debit(
            user_id=user_id,
            amount_tokens=cost,
            operation_type=operation_type,
            metadata=metadata,
            description=description,
            idempotency_key=idempotency_key,
            idempotency_scope=idempotency_scope,
        )
        return await self._operation(op)

    async def get_operation_costs(self) -> dict[str, int]:
        _, costs = await self._parts()
        return await costs.all()

    async def set_operation_cost(
        self, operation_type: str, tokens: int, *, description: str | None = None
    ) -> None:
        validate_operation_type(operation_type)
        validate_amount(tokens, field_name="tokens")
        validate_text(description, field_name="description", max_length=500, required=False)
        if operation_type in RESERVED_OPERATION_TYPES or operation_type == USAGE:
            raise InvalidInput("operation_type", f"{operation_type!r} is reserved")
        _, costs = await self._parts()
        async with write_transaction(await self.engine()) as conn:
            await repo.upsert_cost(conn, operation_type, tokens, description, self.clock())
        await costs.reload()

    async def delete_operation_cost(self, operation_type: str) -> bool:
        validate_operation_type(operation_type)
        _, costs = await self._parts()
        async with write_transaction(await self.engine()) as conn:
            deleted = await repo.delete_cost(conn, operation_type)
        await costs.reload()
        return deleted

    # --- holds (two-phase spending) ----------------------------------------------------

    async def hold(
        self,
        user_id: str,
        amount: int,
        *,
        ttl_seconds: int | None = None,
        operation_type: str = USAGE,
        metadata: dict[str, Any] | None = None,
        description: str | None = None,
        idempotency_key: str | None = None,
        idempotency_scope: str = "",
        spend_cap: SpendCap | None = None,
    ) -> HoldResult:
        op = PlaceHold(
            user_id=user_id,
            amount_tokens=amount,
            ttl_seconds=self.settings.hold_default_ttl_seconds
            if ttl_seconds is None
            else ttl_seconds,
            operation_type=operation_type,
            metadata=metadata,
            description=description,
            idempotency_key=idempotency_key,
            idempotency_scope=idempotency_scope,
            spend_cap=spend_cap,
        )
        await self._check_debit_type(op.operation_type)
        return await self._hold_operation(op)

    async def capture(
        self,
        hold_id: str,
        amount: int,
        *,
        metadata: dict[str, Any] | None = None,
        description: str | None = None,
        idempotency_key: str | None = None,
        idempotency_scope: str = "",
        pricing: dict[str, Any] | None = None,
        spend_cap: SpendCap | None = None,
    ) -> HoldResult:
        """Settle a hold: less than held releases the rest; more overdraws (decision 6,
        docs/architecture.md). With ``spend_cap``, the capture must fit in the key's
        cap for the UTC day, or it is refused and the hold stays pending."""
        op = CaptureHold(
            hold_id=hold_id,
            amount_tokens=amount,
            metadata=metadata,
            description=description,
            idempotency_key=idempotency_key,
            idempotency_scope=idempotency_scope,
            pricing=pricing,
            spend_cap=spend_cap,
        )
        return await self._hold_operation(op)

    async def void(self, hold_id: str) -> HoldResult:
        return await self._hold_operation(VoidHold(hold_id=hold_id))

    async def _hold_operation(self, op: PlaceHold | CaptureHold | VoidHold) -> HoldResult:
        result = await self._apply(op)
        assert isinstance(result, HoldResult)
        return result

    async def get_hold(self, hold_id: str) -> HoldView | None:
        validate_hold_id(hold_id)
        async with read_transaction(await self.engine()) as conn:
            return await queries.hold_view(conn, hold_id)

    async def release_expired_holds(self) -> int:
        """Release every expired pending hold; how many were released."""
        writer, _ = await self._parts()
        return len(await writer.release_expired_holds())

    async def sweep(self) -> tuple[int, int, int]:
        """What time did, written down for every wallet: expired holds released,
        scheduled credits that came due applied, expired grants expired. (Holds
        released, wallets with credits due, wallets with grants due.) ``serve`` and
        ``jobs run`` run it now and then; each part is idempotent, and a spend catches
        its own wallet up anyway."""
        holds = await self.release_expired_holds()
        scheduled = await self.apply_scheduled_credits()
        return holds, scheduled, await self.expire_grants()

    # --- reading and proving the books -------------------------------------------------

    async def transaction_of_entry(self, ledger_entry_id: int) -> str | None:
        """The transaction a ledger entry belongs to (apps know entry ids from deducts)."""
        if isinstance(ledger_entry_id, bool) or not isinstance(ledger_entry_id, int):
            raise InvalidInput("ledger_entry_id", "must be a whole number")
        if not 1 <= ledger_entry_id <= 2**63 - 1:
            return None
        async with read_transaction(await self.engine()) as conn:
            return await queries.transaction_of_entry(conn, ledger_entry_id)

    async def invalidate_cache(self, user_id: str) -> None:
        """Tell the cache invalidation callback that a wallet changed outside the
        writer (a renewal)."""
        await self._call(self._cache_invalidation_callback, user_id)

    def get_ledger(self) -> LedgerView:
        return LedgerView(self)

    async def audit(self) -> AuditReport:
        """Every check of the books, in one snapshot (db/engine.py snapshot_read)."""
        async with snapshot_read(await self.engine()) as conn:
            return await run_audit(conn)
