"""The one write path of the ledger (decision 8, docs/architecture.md).

``LedgerWriter.apply`` takes a batch of operations and applies them in a single
database transaction. Each operation runs inside its own savepoint, so its outcome
is independent of the others: a refusal or a constraint violation rolls back that
operation alone. This is the shape group commit needs: concurrent requests can be
coalesced into one batch and one durable commit.

Idempotency is optimistic: the unique (scope, key) constraint on transactions and
holds decides. When an operation with a key is refused or hits that constraint,
the writer looks the key up and, if the first request committed, answers with its
result instead (or a conflict, if the request differs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, TypeGuard

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbank.clock import Clock
from tokenbank.config import MAX_WRITE_RETRIES
from tokenbank.db.engine import read_transaction, write_transaction, write_turn
from tokenbank.ledger import handlers, scheduled, spend_caps
from tokenbank.ledger.batch import FAST_TYPES, FastOperation, KernelJoin, apply_fast
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.idempotency import KEYED_OPERATIONS, key_row
from tokenbank.ledger.operations import (
    CaptureHold,
    ClawBack,
    Credit,
    Debit,
    OpenWallet,
    Operation,
    PlaceHold,
    Refund,
    VoidHold,
)
from tokenbank.ledger.repository import grants as grant_repo
from tokenbank.ledger.repository import scheduled as scheduled_repo
from tokenbank.ledger.repository import writes as repo
from tokenbank.ledger.results import (
    LedgerResult,
    OperationResult,
    refused_hold,
    refused_operation,
)

# PostgreSQL's serialization failure and deadlock: safe to retry the whole batch.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
SWEEP_BATCH_LIMIT = 1_000

Handler = Callable[[AsyncConnection, Any, Any], Awaitable[LedgerResult]]
HANDLERS: dict[type, Handler] = {
    OpenWallet: handlers.open_wallet,
    Credit: handlers.credit,
    Debit: handlers.debit,
    Refund: handlers.refund,
    # Never the batch kernel's (not a FAST_TYPE); its handler keeps its own key.
    ClawBack: handlers.claw_back,
    PlaceHold: handlers.place_hold,
    CaptureHold: handlers.capture_hold,
    VoidHold: handlers.void_hold,
}


class _RollBack(Exception):
    """Leave the savepoint without keeping what the refused operation wrote."""

    def __init__(self, result: LedgerResult) -> None:
        self.result = result


def _kernel_operations(
    operations: Sequence[Operation],
) -> tuple[list[tuple[int, FastOperation]], dict[str, int]]:
    """The operations the kernel may settle, keeping each user's order; and the
    position of each user's first operation it may not.

    Once a user has an operation the kernel does not settle (a refund, a clawback,
    ...), that user's later operations go the per-operation way too, so they run
    after it. An operation whose user is not known up front (a void) could be any
    user's: every operation after it goes the per-operation way. (A capture's user
    is known only once the kernel reads its hold: the kernel checks it.)
    """
    slow_by_user: dict[str, int] = {}
    unknown_user_seen = False
    fast: list[tuple[int, FastOperation]] = []
    for position, op in enumerate(operations):
        user = op.user_key
        if _for_kernel(op) and not unknown_user_seen and (user is None or user not in slow_by_user):
            fast.append((position, op))
        elif user is not None:
            slow_by_user.setdefault(user, position)
        else:
            unknown_user_seen = True
    return fast, slow_by_user


# Group commit's: given the users whose wallets a batch now holds locked, the queued
# operations it took out of its queue to join the batch (only ones `may_join` allows,
# on those users' wallets, none ahead of another operation of the same user).
Joiner = Callable[[frozenset[str]], list[Operation]]


def may_join(op: Operation) -> bool:
    """Whether a queued operation may join a batch that holds its wallet's lock: one
    the kernel settles whose wallet is known without a read (a capture's is not)."""
    return _for_kernel(op) and not isinstance(op, CaptureHold)


def _joining(
    operations: list[Operation], slow_by_user: dict[str, int], join: Joiner | None
) -> KernelJoin | None:
    """The kernel's view of ``join``: what joins is appended to ``operations`` and
    handed back with its positions. Not for a batch with an operation the kernel
    leaves whose user is unknown (a void: everything after it goes per operation),
    nor for a user with an operation the kernel leaves (theirs must follow it)."""
    if join is None or any(op.user_key is None and not _for_kernel(op) for op in operations):
        return None

    def joined(locked_users: frozenset[str]) -> list[tuple[int, FastOperation]]:
        taken = join(locked_users - slow_by_user.keys())
        first = len(operations)
        operations.extend(taken)
        return [(first + offset, op) for offset, op in enumerate(taken) if _for_kernel(op)]

    return joined


def _for_kernel(op: Operation) -> TypeGuard[FastOperation]:
    # A credit with an effective date may be scheduled for later, and a debit under a
    # key's spend cap counts in its own savepoint: per operation.
    return (
        isinstance(op, FAST_TYPES)
        and getattr(op, "effective_at", None) is None
        and getattr(op, "spend_cap", None) is None
    )


# Refusals that no expired hold or grant can explain.
_NOT_TIME = frozenset(
    {
        ErrorCode.WALLET_NOT_FOUND,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        ErrorCode.DAILY_SPEND_CAP_EXCEEDED,
    }
)


def _time_may_explain(op: Operation, result: LedgerResult) -> TypeGuard[Debit | PlaceHold]:
    """A spend refused for want of tokens may succeed once the wallet is caught up."""
    return (
        isinstance(op, Debit | PlaceHold)
        and not result.replayed
        and result.error_code not in _NOT_TIME
    )


def _is_retryable(error: DBAPIError) -> bool:
    sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    return sqlstate in RETRYABLE_SQLSTATES


class LedgerWriter:
    def __init__(self, engine: AsyncEngine, *, clock: Clock, batch_kernel: bool = True) -> None:
        self._engine = engine
        self._clock = clock
        self._batch_kernel = batch_kernel

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection to pass to several :meth:`apply` calls in a row.

        Group commit keeps one while batches keep coming: checking a connection out
        of the pool costs a round trip (the liveness ping), which a busy writer
        would otherwise pay once per batch.
        """
        async with self._engine.connect() as conn:
            yield conn

    def turn(self) -> AbstractAsyncContextManager[None]:
        """The database's write turn (SQLite's; nothing on PostgreSQL), for a caller
        that decides what to write only once it has it: group commit."""
        return write_turn(self._engine)

    async def apply(
        self,
        operations: Sequence[Operation],
        *,
        connection: AsyncConnection | None = None,
        join: Joiner | None = None,
    ) -> list[LedgerResult]:
        """Apply every operation in one transaction; one result per operation, in order.

        The first attempt settles plain debits and credits with the batch kernel;
        if the database refuses that (say, another process committed one of the
        batch's idempotency keys first), the batch is applied again one operation at
        a time, where each refusal stays with its own operation.

        With ``connection`` (from :meth:`connection`), the transaction runs on it,
        inside the write turn (:meth:`turn`) its caller holds; otherwise on one from
        the pool, in a turn of its own.

        With ``join`` (group commit's), once the kernel holds its wallets' locks it
        takes in the operations queued meanwhile on those wallets (see
        :data:`Joiner`): they are applied after the others, and the results answer
        them too, in the order ``join`` returned them.
        """
        use_kernel = self._batch_kernel
        batch = list(operations)  # grows by what joins it (kept for a retry)
        for attempt in range(MAX_WRITE_RETRIES):
            try:
                async with self._transaction(connection) as conn:
                    now = self._clock()
                    return await self._apply_all(conn, batch, now, use_kernel=use_kernel, join=join)
            except IntegrityError:
                if not use_kernel:
                    raise
                use_kernel = False
            except DBAPIError as error:
                if not _is_retryable(error) or attempt == MAX_WRITE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def _transaction(
        self, connection: AsyncConnection | None
    ) -> AsyncIterator[AsyncConnection]:
        """A transaction on the held connection, or on one from the pool.

        After an error that invalidated a held connection (the server went away),
        the next transaction on it transparently takes a fresh one from the pool.
        """
        if connection is None:
            async with write_transaction(self._engine) as conn:
                yield conn
        else:
            async with connection.begin():  # the caller holds the turn
                yield connection

    async def _apply_all(
        self,
        conn: AsyncConnection,
        operations: list[Operation],
        now: datetime,
        *,
        use_kernel: bool,
        join: Joiner | None = None,
    ) -> list[LedgerResult]:
        results: dict[int, LedgerResult] = {}
        await spend_caps.lock_counters(conn, operations, now)
        fast, slow = _kernel_operations(operations)
        if use_kernel and fast:
            joining = _joining(operations, slow, join)
            results, deferred = await apply_fast(conn, fast, now, slow, joining)
            remaining = sorted(set(range(len(operations))) - set(results) | set(deferred))
        else:
            remaining = list(range(len(operations)))
        for position in remaining:
            results[position] = await self._apply_one(conn, operations[position], now)
        return [results[position] for position in range(len(operations))]

    async def apply_one(self, operation: Operation) -> LedgerResult:
        return (await self.apply([operation]))[0]

    async def release_expired_holds(self, *, limit: int = SWEEP_BATCH_LIMIT) -> list[str]:
        """Release every pending hold whose time is up; the ids released."""
        async with write_transaction(self._engine) as conn:
            return await handlers.release_expired_holds(conn, self._clock(), limit=limit)

    async def expire_grants(self, *, limit: int = SWEEP_BATCH_LIMIT) -> int:
        """Expire the due grants of up to ``limit`` wallets, one transaction each (a
        wallet's failure leaves the others done); how many wallets were looked at."""
        now = self._clock()
        # Looking takes no write lock: a sweep that finds nothing keeps no writer waiting.
        async with read_transaction(self._engine) as conn:
            due = await grant_repo.wallets_with_due_grants(conn, now, limit)
        for user_id in due:
            async with write_transaction(self._engine) as conn:
                await handlers.expire_grants(conn, user_id, now)
        return len(due)

    async def apply_scheduled_credits(self, *, limit: int = SWEEP_BATCH_LIMIT) -> int:
        """Apply the scheduled credits whose time has come, for up to ``limit`` wallets
        (one transaction each); how many wallets were looked at."""
        now = self._clock()
        async with read_transaction(self._engine) as conn:
            due = await scheduled_repo.users_with_due(conn, now, limit)
        for user_id in due:
            async with write_transaction(self._engine) as conn:
                wallet = await repo.wallet_by_user(conn, user_id)
                if wallet is not None:
                    await handlers.apply_scheduled_credits(conn, wallet, now)
        return len(due)

    async def _apply_one(self, conn: AsyncConnection, op: Operation, now: datetime) -> LedgerResult:
        result = await self._attempt(conn, op, now)
        if result.success or not _time_may_explain(op, result):
            return result
        # Apply what time did to the wallet (expired holds released, expired grants
        # expired) in a savepoint of its own: it stays whatever the retry answers.
        async with conn.begin_nested():
            caught_up = await handlers.catch_up(conn, op.user_id, now)
        return await self._attempt(conn, op, now) if caught_up else result

    async def _attempt(self, conn: AsyncConnection, op: Operation, now: datetime) -> LedgerResult:
        handler = HANDLERS[type(op)]
        for _ in range(MAX_WRITE_RETRIES):
            try:
                async with conn.begin_nested():
                    result = await handler(conn, op, now)
                    if not result.success:
                        raise _RollBack(result)
                    capped = await spend_caps.over_cap(conn, op, result, now)
                    if capped is not None:
                        raise _RollBack(capped)
                    if op.idempotency_key is not None:
                        result = await self._claim_key(conn, op, result, now)
                        if not result.success:
                            raise _RollBack(result)
                    return result
            except _RollBack as refused:
                return await self._replay(conn, op, now) or refused.result
            except IntegrityError:
                # Most likely a concurrent request with the same idempotency key
                # committed first; if the key is not found, the violation is real.
                replay = await self._replay(conn, op, now)
                if replay is not None:
                    return replay
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _claim_key(
        conn: AsyncConnection, op: Operation, result: LedgerResult, now: datetime
    ) -> LedgerResult:
        """Bind the key to this request; a key bound to another request is a conflict.

        A result replayed from state (a hold captured before) was not found by its
        key, so its key is checked here too.
        """
        operation = KEYED_OPERATIONS.get(type(op))
        if operation is None or op.idempotency_key is None:
            return result
        if result.replayed:
            registered = await repo.registered_key(conn, op.idempotency_scope, op.idempotency_key)
            if registered is not None:
                return result if registered.request_hash == op.request_hash() else _conflict(op)
        await repo.record_keys(conn, [key_row(op, operation, now)])
        return result

    async def _replay(
        self, conn: AsyncConnection, op: Operation, now: datetime
    ) -> LedgerResult | None:
        """The first result for this idempotency key, if a request with it committed."""
        key = op.idempotency_key
        if key is None or type(op) not in KEYED_OPERATIONS:
            return None
        registered = await repo.registered_key(conn, op.idempotency_scope, key)
        if registered is None:
            return None
        if registered.request_hash != op.request_hash():
            return _conflict(op)
        if isinstance(op, PlaceHold):
            hold = await repo.hold_by_key(conn, op.idempotency_scope, key)
            return handlers.hold_result(hold, replayed=True) if hold is not None else None
        if isinstance(op, CaptureHold):
            # The hold itself remembers its capture (a capture of 0 leaves no transaction).
            return await handlers.capture_hold(conn, op, now)
        return await _replayed_credit_debit_or_refund(conn, op, key)


async def _replayed_credit_debit_or_refund(
    conn: AsyncConnection, op: Operation, key: str
) -> OperationResult | None:
    found = await _replayed_transaction(conn, op.idempotency_scope, key)
    if found is None and isinstance(op, Credit) and op.effective_at is not None:
        # A scheduled credit's transaction (once applied) carries no key: its row does.
        return await scheduled.replay(conn, op.idempotency_scope, key)
    return found


async def _replayed_transaction(
    conn: AsyncConnection, scope: str, key: str
) -> OperationResult | None:
    """The first result of a keyed credit, debit or refund, from its transaction."""
    found = await repo.transaction_by_key(conn, scope, key)
    if found is None:
        return None
    return OperationResult(
        success=True,
        new_balance=found.balance_after,
        ledger_entry_id=found.entry_id,
        transaction_id=found.id,
        replayed=True,
        user_id=found.user_id,
    )


def _conflict(op: Operation) -> LedgerResult:
    if isinstance(op, PlaceHold | CaptureHold | VoidHold):
        return refused_hold(
            ErrorCode.IDEMPOTENCY_CONFLICT,
            hold_id=getattr(op, "hold_id", None),
            user_id=getattr(op, "user_id", None),
        )
    return refused_operation(ErrorCode.IDEMPOTENCY_CONFLICT, user_id=getattr(op, "user_id", None))
