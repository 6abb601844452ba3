"""Concurrency, with real concurrency: many requests in flight at once, on both engines.

Every burst goes through ``all_at_once``: the calls start while another connection
holds the database's write lock, so none can finish; the lock is let go only once
they are all pending and the writers hold their connections, and then they race.
So the overlap is not left to luck. Each test runs with group commit on (the
default: concurrent calls share batches, settled by the batch kernel) and off (each
call its own transaction, ``POOL_SIZE`` of them racing on their own connections).
One test runs two OS processes against the same database (``_concurrent_debits.py``),
gated the same way. Every count is exact, and every test ends with a clean audit.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank import ErrorCode, HoldResult, ManualClock, OperationResult, TokenService
from tokenbank.config import Settings
from tokenbank.db.engine import create_engine, is_sqlite
from tokenbank.testing.postgres import PostgresServer, quote_ident

POOL_SIZE = 20
GATE_TIMEOUT_S = 20.0
LOCKED_TABLES = ("wallets", "holds", "ledger_transactions", "ledger_entries")
HELPER = Path(__file__).with_name("_concurrent_debits.py")
PROCESS_TIMEOUT_S = 60.0
SECOND_START_GRACE_S = 5.0
PG_TEMPLATE = "tokenbank_template"  # tests/conftest.py migrates it once per session
WAITING_ON_LOCKS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'"
)

T = TypeVar("T")


@pytest.fixture(params=["group_commit", "commit_each"])
def group_commit(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "group_commit")


def settings_for(group_commit: bool) -> Settings:
    return Settings(db_pool_size=POOL_SIZE, group_commit=group_commit)


@pytest.fixture
async def service(
    database_url: str, clock: ManualClock, group_commit: bool
) -> AsyncIterator[TokenService]:
    """The conftest service, with a pool big enough for many requests at once."""
    async with TokenService(
        database_url,
        settings=settings_for(group_commit),
        clock=clock,
        welcome_bonus_tokens=0,
        auto_migrate=False,
    ) as token_service:
        yield token_service


class Overlap:
    """How many pool connections are checked out now; ``reached`` once ``target`` were."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.current = 0
        self.reached = asyncio.Event()

    def checkout(self, *_: Any) -> None:
        self.current += 1
        if self.current >= self.target:
            self.reached.set()

    def checkin(self, *_: Any) -> None:
        # A connection checked out before counting began (group commit answers its
        # callers before its drainer gives the connection back) is not counted back.
        self.current = max(0, self.current - 1)


@contextmanager
def overlap_of(engine: AsyncEngine, target: int) -> Iterator[Overlap]:
    overlap = Overlap(target)
    pool = engine.sync_engine.pool
    event.listen(pool, "checkout", overlap.checkout)
    event.listen(pool, "checkin", overlap.checkin)
    try:
        yield overlap
    finally:
        event.remove(pool, "checkout", overlap.checkout)
        event.remove(pool, "checkin", overlap.checkin)


@contextmanager
def transactions_of(engine: AsyncEngine) -> Iterator[list[int]]:
    """How many database transactions began meanwhile (a one-item list, to read after)."""
    begun = [0]

    def on_begin(*_: Any) -> None:
        begun[0] += 1

    event.listen(engine.sync_engine, "begin", on_begin)
    try:
        yield begun
    finally:
        event.remove(engine.sync_engine, "begin", on_begin)


async def warm_pool(engine: AsyncEngine, connections: int) -> None:
    """Open ``connections`` pooled connections now, so a burst need not wait on connects."""
    async with AsyncExitStack() as stack:
        for _ in range(connections):
            await stack.enter_async_context(engine.connect())


@asynccontextmanager
async def writes_blocked(database_url: str) -> AsyncIterator[None]:
    """Hold the database's write lock from another connection while the block runs.

    SQLite: an open ``BEGIN IMMEDIATE``. PostgreSQL: the ledger tables locked in
    EXCLUSIVE mode (reads go on; every write waits). Writers that arrive meanwhile
    queue up behind the lock, and all race for it when the block ends.
    """
    engine = create_engine(database_url, Settings(db_pool_size=1))
    try:
        async with engine.connect() as conn:
            await conn.begin()
            if not is_sqlite(conn):
                await conn.execute(text(f"LOCK TABLE {', '.join(LOCKED_TABLES)} IN EXCLUSIVE MODE"))
            yield
            await conn.rollback()
    finally:
        await engine.dispose()


async def all_at_once(service: TokenService, calls: list[Awaitable[T]]) -> list[T]:
    """Run the calls concurrently: all pending at once, then racing.

    The calls start while the write lock is held elsewhere, so none can finish. The
    lock is let go once the writers hold their connections: with group commit, the
    batch writer (which took every pending call); without, ``POOL_SIZE`` of the calls
    (or all, if fewer), each on its own connection.
    """
    engine = await service.engine()
    grouped = service.settings.group_commit
    writers = 1 if grouped else min(len(calls), POOL_SIZE)
    await warm_pool(engine, writers)
    with overlap_of(engine, writers) as overlap, transactions_of(engine) as begun:
        async with writes_blocked(engine.url.render_as_string(hide_password=False)):
            tasks = [asyncio.ensure_future(call) for call in calls]
            with suppress(TimeoutError):
                await asyncio.wait_for(overlap.reached.wait(), GATE_TIMEOUT_S)
            in_flight = overlap.current
            finished_early = sum(task.done() for task in tasks)
        results = await asyncio.gather(*tasks)
    assert in_flight >= writers, f"only {in_flight} writers of {writers} were in flight"
    assert finished_early == 0, f"{finished_early} calls finished before the race"
    if grouped and len(calls) > 1:  # the calls shared transactions: they were concurrent
        assert begun[0] < len(calls), f"{begun[0]} transactions for {len(calls)} calls"
    return list(results)


async def funded_wallet(service: TokenService, user_id: str, tokens: int) -> None:
    await service.open_wallet(user_id)
    credited = await service.credit(user_id, amount=tokens, operation_type="admin_grant")
    assert credited.success and credited.new_balance == tokens


async def balance_of(service: TokenService, user_id: str) -> tuple[int, int, int]:
    """(balance, held, spent)."""
    info = await service.get_balance(user_id)
    assert info is not None
    return info.tokens_balance, info.held, info.tokens_spent


async def entries_of(service: TokenService, user_id: str, operation_type: str) -> int:
    entries = await service.get_ledger().get_user_entries(
        user_id, limit=500, operation_type=operation_type
    )
    return len(entries)


async def assert_audit_ok(service: TokenService) -> None:
    report = await service.audit()
    assert report.ok, report


def codes(results: list[OperationResult] | list[HoldResult]) -> Counter[ErrorCode | None]:
    return Counter(result.error_code for result in results if not result.success)


# --- 1. one process, 200 debits against 100 tokens -------------------------------------


async def test_concurrent_debits_never_overspend(service: TokenService) -> None:
    await funded_wallet(service, "racer", 100)

    results = await all_at_once(service, [service.debit("racer", amount=1) for _ in range(200)])

    successes = [r for r in results if r.success]
    assert len(successes) == 100
    assert codes(results) == {ErrorCode.INSUFFICIENT_TOKENS: 100}
    # Each success left a different balance behind: they were applied one by one.
    assert sorted(r.new_balance for r in successes if r.new_balance is not None) == list(range(100))
    assert len({r.transaction_id for r in successes}) == 100
    assert await balance_of(service, "racer") == (0, 0, 100)
    assert await entries_of(service, "racer", "usage") == 100
    await assert_audit_ok(service)


# --- 2. two OS processes, 100 debits each, against 100 tokens --------------------------


async def _spawn(database_url: str, user_id: str, count: int, group_commit: bool) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPER),
        database_url,
        user_id,
        str(count),
        "group_commit" if group_commit else "commit_each",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _read_json_line(process: Any) -> dict[str, Any]:
    line = await asyncio.wait_for(process.stdout.readline(), PROCESS_TIMEOUT_S)
    if not line:
        stderr = await process.stderr.read()
        raise AssertionError(f"helper process ended early:\n{stderr.decode()}")
    report: dict[str, Any] = json.loads(line)
    return report


@pytest.mark.slow
async def test_debits_from_two_processes_never_overspend(
    service: TokenService, database_url: str, group_commit: bool
) -> None:
    await funded_wallet(service, "shared", 100)
    processes = [await _spawn(database_url, "shared", 100, group_commit) for _ in range(2)]
    writers = 1 if group_commit else POOL_SIZE
    try:
        for process in processes:
            assert await _read_json_line(process) == {"ready": True}
        # Both processes start behind our write lock; it is let go only once each has
        # its writers in flight, so the two bursts race for the same tokens.
        async with writes_blocked(database_url):
            for process in processes:
                process.stdin.write(b"go\n")
                await process.stdin.drain()
            for process in processes:
                assert (await _read_json_line(process))["in_flight"] >= writers
        reports = [await _read_json_line(process) for process in processes]
        for process in processes:
            _, stderr = await asyncio.wait_for(process.communicate(), PROCESS_TIMEOUT_S)
            assert process.returncode == 0, stderr.decode()
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    assert sum(r["successes"] for r in reports) == 100
    for report in reports:
        refused = 100 - report["successes"]
        assert report["refusals"] == ({"insufficient_tokens": refused} if refused else {})
    balances = sorted(b for r in reports for b in r["balances"])
    assert balances == list(range(100))
    assert len({t for r in reports for t in r["transaction_ids"]}) == 100
    assert await balance_of(service, "shared") == (0, 0, 100)
    assert await entries_of(service, "shared", "usage") == 100
    await assert_audit_ok(service)


# --- 3. one idempotency key, sent 10 times at once -------------------------------------

ReplayKey = tuple[int | None, str | None, int | None]


def replay_key(result: OperationResult) -> ReplayKey:
    return result.ledger_entry_id, result.transaction_id, result.new_balance


def assert_one_answer(results: list[OperationResult]) -> OperationResult:
    """Every result succeeded with the same answer, and exactly one was not a replay."""
    assert all(r.success for r in results), codes(results)
    assert len({replay_key(r) for r in results}) == 1, [replay_key(r) for r in results]
    assert [r.replayed for r in results].count(False) == 1
    return results[0]


# 7 fits again after the first (the unique key refuses the second write);
# 100 does not (the balance refuses it first) — two different replay paths.
@pytest.mark.parametrize("amount", [7, 100])
async def test_same_key_debit_at_once_debits_once(service: TokenService, amount: int) -> None:
    await funded_wallet(service, "idem", 100)

    results = await all_at_once(
        service,
        [service.debit("idem", amount=amount, idempotency_key="debit-1") for _ in range(10)],
    )

    first = assert_one_answer(results)
    assert first.new_balance == 100 - amount
    assert await balance_of(service, "idem") == (100 - amount, 0, amount)
    assert await entries_of(service, "idem", "usage") == 1
    await assert_audit_ok(service)


async def test_same_key_credit_at_once_credits_once(service: TokenService) -> None:
    await service.open_wallet("idem")

    results = await all_at_once(
        service,
        [service.credit("idem", amount=25, idempotency_key="credit-1") for _ in range(10)],
    )

    first = assert_one_answer(results)
    assert first.new_balance == 25
    assert await balance_of(service, "idem") == (25, 0, 0)
    assert await entries_of(service, "idem", "purchase") == 1
    await assert_audit_ok(service)


@pytest.mark.parametrize("amount", [30, 100])
async def test_same_key_hold_at_once_holds_once(service: TokenService, amount: int) -> None:
    await funded_wallet(service, "idem", 100)

    results = await all_at_once(
        service,
        [service.hold("idem", amount, idempotency_key="hold-1") for _ in range(10)],
    )

    assert all(r.success for r in results), codes(results)
    assert len({r.hold_id for r in results}) == 1
    assert len({(r.status, r.amount_tokens, r.expires_at, r.user_id) for r in results}) == 1
    assert [r.replayed for r in results].count(False) == 1
    assert await balance_of(service, "idem") == (100, amount, 0)
    assert results[0].hold_id is not None
    hold = await service.get_hold(results[0].hold_id)
    assert hold is not None and (hold.status, hold.amount_tokens) == ("pending", amount)
    await assert_audit_ok(service)


# 4 of 10 fits again after the first refund; 10 of 10 does not (the debit is used up).
@pytest.mark.parametrize("amount", [4, 10])
async def test_same_key_refund_at_once_refunds_once(service: TokenService, amount: int) -> None:
    await funded_wallet(service, "idem", 100)
    debited = await service.debit("idem", amount=10)
    assert debited.transaction_id is not None

    results = await all_at_once(
        service,
        [
            service.refund(
                "idem", amount, refund_of=debited.transaction_id, idempotency_key="refund-1"
            )
            for _ in range(10)
        ],
    )

    first = assert_one_answer(results)
    assert first.new_balance == 90 + amount
    assert await balance_of(service, "idem") == (90 + amount, 0, 10 - amount)
    assert await entries_of(service, "idem", "refund") == 1
    await assert_audit_ok(service)


# --- 4. holds: reserve, capture, capture vs void ---------------------------------------


async def test_concurrent_holds_capture_and_void(service: TokenService) -> None:
    await funded_wallet(service, "holder", 100)

    # 50 holds of 3 against 100 tokens: exactly 33 fit.
    placed = await all_at_once(
        service, [service.hold("holder", 3, ttl_seconds=600) for _ in range(50)]
    )
    held = [r.hold_id for r in placed if r.success and r.hold_id is not None]
    assert len(set(held)) == 33
    assert codes(placed) == {ErrorCode.INSUFFICIENT_TOKENS: 17}
    assert sorted(
        r.available_tokens for r in placed if r.success and r.available_tokens is not None
    ) == list(range(1, 100, 3))
    assert await balance_of(service, "holder") == (100, 99, 0)
    await assert_audit_ok(service)

    # The same hold captured 10 times at once (with and without a key): settled once.
    for hold_id, key in ((held[0], None), (held[1], "capture-1")):
        captures = await all_at_once(
            service, [service.capture(hold_id, 2, idempotency_key=key) for _ in range(10)]
        )
        assert all(r.success for r in captures), codes(captures)
        agreed = {
            (r.hold_id, r.status, r.captured_tokens, r.transaction_id, r.ledger_entry_id)
            for r in captures
        }
        assert len(agreed) == 1, agreed
        assert len({r.new_balance for r in captures}) == 1
        assert [r.replayed for r in captures].count(False) == 1
        assert captures[0].transaction_id is not None
    assert await balance_of(service, "holder") == (96, 93, 4)
    assert await entries_of(service, "holder", "usage") == 2
    await assert_audit_ok(service)

    # Capture against void on each of the other 31 holds, all at once: one wins each.
    contested = held[2:]
    calls: list[Awaitable[HoldResult]] = []
    for hold_id in contested:
        calls += [service.capture(hold_id, 3), service.void(hold_id)]
    outcomes = await all_at_once(service, calls)
    captured = 0
    for index, hold_id in enumerate(contested):
        capture, void = outcomes[2 * index], outcomes[2 * index + 1]
        assert capture.success != void.success, (capture, void)
        loser = void if capture.success else capture
        assert loser.error_code == ErrorCode.HOLD_NOT_PENDING, loser
        view = await service.get_hold(hold_id)
        assert view is not None
        assert view.status == ("captured" if capture.success else "voided")
        captured += capture.success
    assert await balance_of(service, "holder") == (96 - 3 * captured, 0, 4 + 3 * captured)
    assert await entries_of(service, "holder", "usage") == 2 + captured
    await assert_audit_ok(service)


# --- 5. many refunds of one debit -------------------------------------------------------


# With nothing else spent, the debit's remainder and "what the user has spent" run out
# together; with other spending, only the named debit's remainder bounds the refunds.
# Either way the refusal names the debit.
@pytest.mark.parametrize("other_spending", [0, 50])
async def test_concurrent_refunds_never_exceed_the_debit(
    service: TokenService, other_spending: int
) -> None:
    await funded_wallet(service, "refunded", 100)
    if other_spending:
        assert (await service.debit("refunded", amount=other_spending)).success
    debited = await service.debit("refunded", amount=10)
    assert debited.transaction_id is not None
    balance = 90 - other_spending

    results = await all_at_once(
        service,
        [
            service.refund(
                "refunded", 1, refund_of=debited.transaction_id, idempotency_key=f"r-{i}"
            )
            for i in range(20)
        ],
    )

    successes = [r for r in results if r.success]
    assert len(successes) == 10
    assert codes(results) == {ErrorCode.REFUND_EXCEEDS_DEBIT: 10}
    assert sorted(r.new_balance for r in successes if r.new_balance is not None) == list(
        range(balance + 1, balance + 11)
    )
    assert await balance_of(service, "refunded") == (balance + 10, 0, other_spending)
    assert await entries_of(service, "refunded", "refund") == 10
    await assert_audit_ok(service)


# --- beyond the brief: one wallet opened 10 times at once -------------------------------


async def test_concurrent_open_wallet_grants_the_bonus_once(
    database_url: str, clock: ManualClock, group_commit: bool
) -> None:
    async with TokenService(
        database_url,
        settings=settings_for(group_commit),
        clock=clock,
        welcome_bonus_tokens=100,
        auto_migrate=False,
    ) as service:
        results = await all_at_once(service, [service.open_wallet("newcomer") for _ in range(10)])

        assert all(r.success for r in results)
        assert [r.created for r in results].count(True) == 1
        assert {(r.new_balance, r.welcome_bonus_tokens) for r in results if r.created} == {
            (100, 100)
        }
        assert {(r.new_balance, r.welcome_bonus_tokens) for r in results if not r.created} == {
            (100, 0)
        }
        assert await balance_of(service, "newcomer") == (100, 0, 0)
        assert await entries_of(service, "newcomer", "bonus") == 1
        await assert_audit_ok(service)


# --- bugs found --------------------------------------------------------------------------


START_SERVICE = """
import asyncio, sys
from tokenbank import TokenService

async def main() -> None:
    async with TokenService(sys.argv[1], welcome_bonus_tokens=0):
        pass

asyncio.run(main())
"""


async def _create_database(server: PostgresServer, name: str, template: str | None) -> str:
    admin = await asyncpg.connect(server.sync_dsn("postgres"))
    try:
        clause = f" TEMPLATE {quote_ident(template)}" if template else ""
        await admin.execute(f"CREATE DATABASE {quote_ident(name)}{clause}")
    finally:
        await admin.close()
    return name


async def _wait_for_lock_waiters(server: PostgresServer, name: str, count: int) -> None:
    """Until ``count`` sessions on database ``name`` wait for a lock.

    Asked from a connection of its own, outside any transaction: pg_stat_activity is
    read once per transaction.
    """
    monitor = await asyncpg.connect(server.sync_dsn("postgres"))
    try:
        for _ in range(int(GATE_TIMEOUT_S / 0.01)):
            if await monitor.fetchval(WAITING_ON_LOCKS, name) >= count:
                return
            await asyncio.sleep(0.01)
    finally:
        await monitor.close()
    raise AssertionError(f"fewer than {count} sessions ever waited behind the blocker")


class StartupFailed(Exception):
    """A TokenService process failed to start."""


async def test_two_processes_starting_at_once_on_a_fresh_postgres_database(
    postgres_server: PostgresServer,
) -> None:
    name = await _create_database(postgres_server, f"fresh_{uuid.uuid4().hex}", None)
    url = postgres_server.async_url(name)
    # Another session creates alembic_version and keeps it uncommitted: both processes
    # see an empty database, then wait behind it; when it rolls back they race.
    blocker = await asyncpg.connect(postgres_server.sync_dsn(name))
    processes: list[Any] = []
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("CREATE TABLE alembic_version (version_num varchar(32) NOT NULL)")
        for _ in range(2):
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    START_SERVICE,
                    url,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
            )
        await _wait_for_lock_waiters(postgres_server, name, len(processes))
        await transaction.rollback()
        outputs = [
            (await asyncio.wait_for(process.communicate(), PROCESS_TIMEOUT_S))[0]
            for process in processes
        ]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await blocker.close()
    failed = [
        out.decode()[-600:]
        for process, out in zip(processes, outputs, strict=True)
        if process.returncode != 0
    ]
    if failed:
        raise StartupFailed(failed)


async def test_two_services_starting_at_once_in_one_process(
    postgres_server: PostgresServer,
) -> None:
    names = [
        await _create_database(postgres_server, f"migrated_{uuid.uuid4().hex}", PG_TEMPLATE)
        for _ in range(2)
    ]
    # Service A's migration check waits inside alembic (alembic_version is locked)
    # while service B runs its own migration check from start to end.
    blocker = await asyncpg.connect(postgres_server.sync_dsn(names[0]))
    first = TokenService(postgres_server.async_url(names[0]), welcome_bonus_tokens=0)
    second = TokenService(postgres_server.async_url(names[1]), welcome_bonus_tokens=0)
    starting: asyncio.Future[AsyncEngine] | None = None
    second_starting: asyncio.Future[AsyncEngine] | None = None
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        starting = asyncio.ensure_future(first.engine())
        await _wait_for_lock_waiters(postgres_server, names[0], 1)
        # Today the second start finishes at once; a fix may make it wait for the first.
        second_starting = asyncio.ensure_future(second.engine())
        await asyncio.wait({second_starting}, timeout=SECOND_START_GRACE_S)
        await transaction.rollback()
        await starting
        await second_starting
        for service in (first, second):
            await service.open_wallet("after-start")
            await assert_audit_ok(service)
    finally:
        await blocker.close()  # lets the first service go on, if it still waits
        for task in (starting, second_starting):
            if task is not None:
                with suppress(Exception):
                    await task
        await first.close()
        await second.close()
