"""``charge`` (refund on failure) and ``reserve`` (settle the actual cost), sync and async."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.client.conftest import Script, async_client, failure, ok, sync_client
from tokenbank.client import InsufficientTokensError

RECEIPT = {"balance": 95, "ledgerEntryId": 3, "transactionId": "tx", "replayed": False}
HOLD_ID = "hold_" + "b" * 32
HOLD = {
    "holdId": HOLD_ID,
    "userId": "alice",
    "status": "pending",
    "amount": 50,
    "capturedAmount": None,
    "expiresAt": None,
    "balance": 100,
    "available": 50,
}


class WorkFailed(Exception):
    pass


def test_charge_keeps_the_tokens_when_the_work_succeeds() -> None:
    script = Script([ok(RECEIPT)])
    with sync_client(script) as client, client.charge("alice", 5, description="Image") as charge:
        assert charge.balance == 95 and charge.ledger_entry_id == 3
    assert script.paths == ["/api/tokens/deduct"]


def test_charge_refunds_exactly_that_deduct_when_the_work_fails() -> None:
    script = Script([ok(RECEIPT), ok(RECEIPT | {"balance": 100})])
    with (
        sync_client(script) as client,
        pytest.raises(WorkFailed),
        client.charge("alice", 5, description="Image", reference_id="job-1"),
    ):
        raise WorkFailed
    assert script.paths == ["/api/tokens/deduct", "/api/tokens/refund"]
    assert script.body(1) == {
        "userId": "alice",
        "amount": 5,
        "ledgerEntryId": 3,
        "description": "Refund: Image",
        "referenceId": "job-1:refund",
    }


def test_charge_refused_never_runs_the_work() -> None:
    script = Script([failure(402, {"error": "Insufficient tokens", "available": 1, "required": 5})])
    ran = []
    with (
        sync_client(script) as client,
        pytest.raises(InsufficientTokensError),
        client.charge("alice", 5),
    ):
        ran.append(True)
    assert ran == []


def test_a_refund_that_fails_is_logged_for_replay_and_the_work_error_is_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Script([ok(RECEIPT), httpx.ConnectError("down")])
    with (
        sync_client(script) as client,
        pytest.raises(WorkFailed),
        client.charge("alice", 5, reference_id="job-2"),
    ):
        raise WorkFailed
    assert len(script.requests) == 4  # the deduct, then three refund attempts
    assert {script.body(i)["referenceId"] for i in (1, 2, 3)} == {"job-2:refund"}
    record = next(r for r in caplog.records if hasattr(r, "tokenbank_replay"))
    assert record.tokenbank_replay["method"] == "refund"
    assert record.tokenbank_replay["arguments"]["reference_id"] == "job-2:refund"
    assert "client.refund(**" in caplog.text


def test_reserve_settles_the_actual_cost() -> None:
    captured = HOLD | {"status": "captured", "capturedAmount": 30, "balance": 70}
    script = Script([ok(HOLD), ok(captured)])
    with (
        sync_client(script) as client,
        client.reserve("alice", 50, reference_id="job-3") as reservation,
    ):
        assert reservation.maximum == 50
        settled = reservation.settle(30)
        with pytest.raises(RuntimeError, match="already settled"):
            reservation.settle(10)
    assert settled.balance == 70
    assert script.paths == ["/api/tokens/holds", f"/api/tokens/holds/{HOLD_ID}/capture"]
    assert script.body(1) == {"amount": 30, "referenceId": "job-3:capture"}


def test_reserve_not_settled_captures_the_maximum() -> None:
    script = Script([ok(HOLD), ok(HOLD | {"status": "captured", "capturedAmount": 50})])
    with sync_client(script) as client, client.reserve("alice", 50) as reservation:
        pass
    assert reservation.settled is not None and reservation.settled.captured_amount == 50
    assert script.body(1)["amount"] == 50


def test_reserve_voids_when_the_work_fails() -> None:
    script = Script([ok(HOLD), ok(HOLD | {"status": "voided"})])
    with sync_client(script) as client, pytest.raises(WorkFailed), client.reserve("alice", 50):
        raise WorkFailed
    assert script.paths[-1] == f"/api/tokens/holds/{HOLD_ID}/void"


def test_a_capture_that_fails_at_the_end_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Script([ok(HOLD), failure(409, {"error": "Hold has expired", "code": "hold_expired"})])
    with sync_client(script) as client, client.reserve("alice", 50):
        pass
    assert "token service capture failed (ConflictError: Hold has expired)" in caplog.text


async def test_async_charge_and_reserve() -> None:
    script = Script([ok(RECEIPT), ok(RECEIPT), ok(HOLD), ok(HOLD | {"status": "voided"})])
    async with async_client(script) as client:
        with pytest.raises(WorkFailed):
            async with client.charge("alice", 5, reference_id="job-4"):
                raise WorkFailed
        with pytest.raises(WorkFailed):
            async with client.reserve("alice", 50):
                raise WorkFailed
    assert script.paths == [
        "/api/tokens/deduct",
        "/api/tokens/refund",
        "/api/tokens/holds",
        f"/api/tokens/holds/{HOLD_ID}/void",
    ]
    assert script.body(1)["referenceId"] == "job-4:refund"


async def test_async_reserve_settles() -> None:
    captured = HOLD | {"status": "captured", "capturedAmount": 20}
    script = Script([ok(HOLD), ok(captured)])
    async with async_client(script) as client, client.reserve("alice", 50) as reservation:
        await reservation.settle(20)
    assert len(script.requests) == 2
    assert script.body(1)["amount"] == 20


async def test_work_cancelled_by_a_timeout_is_still_refunded() -> None:
    script = Script([ok(RECEIPT)])
    async with async_client(script) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01), client.charge("alice", 5, reference_id="job-5"):
                await asyncio.sleep(5)
    assert script.paths == ["/api/tokens/deduct", "/api/tokens/refund"]
    assert script.body(1)["referenceId"] == "job-5:refund"
