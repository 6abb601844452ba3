"""Concurrency, with real concurrency: many requests in flight at once, on both engines.

Every test fires its requests with ``asyncio.gather`` through a service whose pool
holds ``POOL_SIZE`` connections, and checks that they really overlapped (the pool
had many connections checked out at once). One test runs two OS processes against
the same database. Every count is exact, and every test ends with a clean audit.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank import ErrorCode, HoldResult, ManualClock, OperationResult, TokenService
from tokenbank.config import Settings

POOL_SIZE = 20
# At least this many requests must have held a connection at the same moment.
MIN_OVERLAP = 8
HELPER = Path(__file__).with_name("_concurrent_debits.py")
PROCESS_TIMEOUT_S = 60.0

T = TypeVar("T")


@pytest.fixture
async def service(database_url: str, clock: ManualClock) -> AsyncIterator[TokenService]:
    """The conftest service, with a pool big enough for many requests at once."""
    async with TokenService(
        database_url,
        settings=Settings(db_pool_size=POOL_SIZE),
        clock=clock,
        welcome_bonus_tokens=0,
        auto_migrate=False,
    ) as token_service:
        yield token_service


class Overlap:
    """The most pool connections checked out at the same moment."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def checkout(self, *_: Any) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)

    def checkin(self, *_: Any) -> None:
        self.current -= 1


@contextmanager
def overlap_of(engine: AsyncEngine) -> Iterator[Overlap]:
    overlap = Overlap()
    pool = engine.sync_engine.pool
    event.listen(pool, "checkout", overlap.checkout)
    event.listen(pool, "checkin", overlap.checkin)
    try:
        yield overlap
    finally:
        event.remove(pool, "checkout", overlap.checkout)
        event.remove(pool, "checkin", overlap.checkin)


async def all_at_once(service: TokenService, calls: list[Awaitable[T]]) -> list[T]:
    """Run the calls concurrently; fail unless many really were in flight together."""
    with overlap_of(await service.engine()) as overlap:
        results = await asyncio.gather(*calls)
    assert overlap.peak >= min(MIN_OVERLAP, len(calls)), f"peak overlap {overlap.peak}"
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


async def _spawn(database_url: str, user_id: str, count: int) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPER),
        database_url,
        user_id,
        str(count),
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
    service: TokenService, database_url: str
) -> None:
    await funded_wallet(service, "shared", 100)
    processes = [await _spawn(database_url, "shared", 100) for _ in range(2)]
    try:
        for process in processes:
            assert await _read_json_line(process) == {"ready": True}
        for process in processes:  # both are waiting for this line: they start together
            process.stdin.write(b"go\n")
        for process in processes:
            await process.stdin.drain()
        reports = [await _read_json_line(process) for process in processes]
        for process in processes:
            _, stderr = await asyncio.wait_for(process.communicate(), PROCESS_TIMEOUT_S)
            assert process.returncode == 0, stderr.decode()
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    # The two bursts overlapped in time, and each process won some of the race.
    assert max(r["started"] for r in reports) < min(r["finished"] for r in reports)
    assert sum(r["successes"] for r in reports) == 100
    for report in reports:
        assert report["refusals"] == (
            {"insufficient_tokens": 100 - report["successes"]} if report["successes"] < 100 else {}
        )
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


# With nothing else spent, "what the user has spent" runs out first; with other spending,
# only the named debit's remainder bounds the refunds.
@pytest.mark.parametrize(
    ("other_spending", "refusal"),
    [(0, ErrorCode.REFUND_EXCEEDS_SPENT), (50, ErrorCode.REFUND_EXCEEDS_DEBIT)],
)
async def test_concurrent_refunds_never_exceed_the_debit(
    service: TokenService, other_spending: int, refusal: ErrorCode
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
    assert codes(results) == {refusal: 10}
    assert sorted(r.new_balance for r in successes if r.new_balance is not None) == list(
        range(balance + 1, balance + 11)
    )
    assert await balance_of(service, "refunded") == (balance + 10, 0, other_spending)
    assert await entries_of(service, "refunded", "refund") == 10
    await assert_audit_ok(service)
