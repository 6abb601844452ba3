"""The SDK against a real ``tokenbank serve`` process, over TCP (one per session)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.client.conftest import RealServer
from tokenbank.client import (
    ConflictError,
    ForbiddenError,
    InsufficientTokensError,
    NotFoundError,
    RetryPolicy,
    TokenClient,
    UnauthorizedError,
    UnavailableError,
    with_token_process,
)


class DropFirstAnswer(httpx.BaseTransport):
    """Sends every request, but loses the first answer (a timeout after the server acted)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.attempts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        response = self._inner.handle_request(request)
        if self.attempts == 1:
            response.read()
            response.close()
            raise httpx.ReadTimeout("answer lost", request=request)
        return response

    def close(self) -> None:
        self._inner.close()


def test_dialect_a_round_trip(real_server: RealServer) -> None:
    user = real_server.new_user(plan=None)
    with real_server.client() as tokens:
        assert tokens.get_balance(user).balance == 1000
        charged = tokens.deduct(user, 30, description="Image gen", reference_id=f"{user}-job")
        again = tokens.deduct(user, 30, description="Image gen", reference_id=f"{user}-job")
        assert (charged.balance, again.balance) == (970, 970)
        assert again.replayed and again.ledger_entry_id == charged.ledger_entry_id
        with pytest.raises(ConflictError):
            tokens.deduct(user, 31, reference_id=f"{user}-job")
        with pytest.raises(InsufficientTokensError) as refused:
            tokens.deduct(user, 5000)
        assert (refused.value.available, refused.value.required) == (970, 5000)
        assert refused.value.buy_tokens_url == f"{real_server.base_url}/tokens"
        assert tokens.refund(user, 30, ledger_entry_id=charged.ledger_entry_id).balance == 1000
        assert tokens.credit(user, 50, operation_type="bonus").balance == 1050
        entries = tokens.get_ledger(user, limit=10)
        assert [e.operation_type for e in entries][:3] == ["bonus", "refund", "usage"]
        stats = tokens.get_stats(user)
        assert (stats.net_change, stats.operation_count) == (1050, 4)
        with pytest.raises(NotFoundError, match="User wallet not found"):
            tokens.get_balance(f"{user}-nobody")


def test_grants_round_trip(real_server: RealServer) -> None:
    user = real_server.new_user(plan=None)  # the welcome bonus: 1000 promotional
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    with real_server.client() as tokens:
        tokens.credit(user, 200, operation_type="purchase")
        tokens.credit(user, 50, category="promotional", priority=10, expires_at=expires_at)
        tokens.deduct(user, 30)  # the priority-10 grant first
        newest, paid, bonus = tokens.get_grants(user)
        assert (newest.category, newest.priority, newest.remaining) == ("promotional", 10, 20)
        assert newest.expires_at == expires_at
        assert (paid.category, paid.remaining, paid.expires_at) == ("paid", 200, None)
        assert (bonus.source, bonus.remaining, bonus.status) == ("bonus", 1000, "active")
        balance = tokens.get_balance(user)
        assert (balance.paid, balance.promotional) == (200, 1020)
        assert (balance.next_expiry_at, balance.next_expiry_amount) == (expires_at, 20)
        with pytest.raises(NotFoundError):
            tokens.get_grants(f"{user}-nobody")
        starts = expires_at - timedelta(days=10)
        scheduled = tokens.credit(user, 70, effective_at=starts)
        assert (scheduled.scheduled_credit_id is not None, scheduled.effective_at) == (
            True,
            starts,
        )
        waiting = tokens.get_grants(user)[0]
        assert (waiting.grant_id, waiting.status, waiting.effective_at) == (
            None,
            "scheduled",
            starts,
        )


def test_holds_round_trip(real_server: RealServer) -> None:
    user = real_server.new_user(plan=None)
    with real_server.client() as tokens:
        placed = tokens.hold(user, 500, ttl_seconds=300)
        assert (placed.status, placed.available) == ("pending", 500)
        with tokens.reserve(user, 200) as reservation:
            assert tokens.get_balance(user).available == 300
            reservation.settle(120)
        captured = tokens.capture(placed.hold_id, 320)
        assert (captured.captured_amount, captured.balance) == (320, 560)
        assert tokens.get_hold(placed.hold_id).status == "captured"
        voided = tokens.void(tokens.hold(user, 10).hold_id)
        assert voided.status == "voided" and voided.available == 560


async def test_async_client_and_the_seed_000_extras(real_server: RealServer) -> None:
    user = real_server.new_user(plan=None)
    async with real_server.async_client() as tokens:
        wallet = await tokens.open_wallet(user)
        assert not wallet.created and wallet.balance == 1000
        costs = {cost.action: cost.tokens for cost in await tokens.get_costs()}
        assert costs["image_generation"] == 10
        estimate = await tokens.estimate(user_id=user, action="image_generation")
        assert (estimate.cost, estimate.can_afford, estimate.remaining_after) == (10, True, 990)
        async with tokens.charge(user, 10, description="image") as charge:
            assert charge.balance == 990
        with pytest.raises(RuntimeError):
            async with tokens.charge(user, 10, description="image"):
                raise RuntimeError("generation failed")
        assert (await tokens.get_balance(user)).balance == 990


def test_a_lost_answer_is_retried_and_charged_once(real_server: RealServer) -> None:
    user = real_server.new_user(plan=None)
    transport = DropFirstAnswer()
    with TokenClient(real_server.base_url, real_server.api_key, transport=transport) as tokens:
        receipt = tokens.deduct(user, 40)
    assert transport.attempts == 2
    assert receipt.replayed and receipt.balance == 960
    with real_server.client() as tokens:
        assert tokens.get_balance(user).balance == 960
        assert len(tokens.get_ledger(user, operation_type="usage")) == 1


def test_token_process_decorator_end_to_end(real_server: RealServer) -> None:
    user = real_server.new_user()
    with real_server.client() as tokens:

        @with_token_process(
            feature_endpoint_id="summarize", user_id=lambda job: job["user_id"], client=tokens
        )
        def summarize(job: dict[str, Any]) -> dict[str, Any]:
            return {
                "summary": job["text"][:5],
                "input_token": 120,
                "output_token": 400,
                "model": "gpt-4o",
            }

        result = summarize({"user_id": user, "text": "a long text"})
        assert result["summary"] == "a lon"
        # 400 output tokens / 4 = 100, plus the plan's 20% = 120
        assert tokens.get_balance(user).balance == 880

        free = with_token_process(feature_endpoint_id="summarize", user_id=user, client=tokens)(
            lambda: {"input_token": 0, "output_token": 0}
        )
        free()
        assert tokens.get_balance(user).balance == 880


async def test_token_process_hold_mode_end_to_end(real_server: RealServer) -> None:
    user = real_server.new_user()
    async with real_server.async_client() as tokens:
        async with tokens.token_process(user, "summarize-held") as process:
            assert process.hold_id is not None
            assert (await tokens.get_balance(user)).held == 50
            process.record(input_token=10, output_token=40, model="gpt-4o")
        assert process.ended is not None and process.ended.cost == 12
        with pytest.raises(RuntimeError):
            async with tokens.token_process(user, "summarize-held"):
                raise RuntimeError("model down")
        balance = await tokens.get_balance(user)
        assert (balance.balance, balance.held) == (988, 0)


def test_token_process_refusals_end_to_end(real_server: RealServer) -> None:
    off_plan = real_server.new_user(plan=None)
    poor = real_server.new_user()
    with real_server.client() as tokens:
        tokens.deduct(poor, 995)
        with (
            pytest.raises(InsufficientTokensError, match="not-access-able"),
            tokens.token_process(poor, "summarize"),
        ):
            raise AssertionError("the work must not run")
        with (
            pytest.raises(ForbiddenError, match="not available in your package"),
            tokens.token_process(off_plan, "summarize"),
        ):
            raise AssertionError("the work must not run")


def test_a_wrong_key_and_no_server(real_server: RealServer) -> None:
    with TokenClient(real_server.base_url, "tb_wrong") as tokens:
        with pytest.raises(UnauthorizedError, match="Invalid API key"):
            tokens.get_balance("anyone")
        with pytest.raises(UnauthorizedError, match="Invalid server API key"):
            tokens.start_token_process("anyone", "summarize")
    fast = RetryPolicy(backoff_seconds=0.01, max_backoff_seconds=0.01)
    with (
        TokenClient("http://127.0.0.1:9", "tb_x", retry=fast) as tokens,
        pytest.raises(UnavailableError, match="unreachable"),
    ):
        tokens.get_balance("anyone")


def test_the_books_still_balance(real_server: RealServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenbank.cli", "audit"],
        env=real_server.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "audit passed" in result.stdout
