"""Each call's request (path, headers, body, idempotency key) and its parsed answer.

Through ``httpx.MockTransport``: no server. The async client is checked to have the
same methods and signatures as the sync one, and its requests on a few calls.
"""

from __future__ import annotations

import inspect
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from tests.client.conftest import (
    API_KEY,
    BASE_URL,
    Script,
    async_client,
    failure,
    ok,
    process_ok,
    sync_client,
)
from tokenbank.client import (
    DEFAULT_LIMITS,
    DEFAULT_TIMEOUT,
    AsyncTokenClient,
    Balance,
    InsufficientTokensError,
    Receipt,
    TokenClient,
    TokenServiceError,
)

RECEIPT = {"balance": 95, "ledgerEntryId": 3, "transactionId": "tx-1", "replayed": False}
HOLD_ID = "hold_" + "a" * 32
HOLD = {
    "holdId": HOLD_ID,
    "userId": "alice",
    "status": "pending",
    "amount": 50,
    "capturedAmount": None,
    "expiresAt": "2026-01-01T00:15:00Z",
    "balance": 100,
    "available": 50,
    "ledgerEntryId": None,
    "transactionId": None,
    "replayed": False,
}


def is_uuid(value: str) -> bool:
    return str(uuid.UUID(value)) == value


# --- configuration --------------------------------------------------------------------------


def test_configured_from_seed_000_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_SERVICE_URL", "https://tokens.example/")
    monkeypatch.setenv("TOKEN_SERVICE_API_KEY", "tb_from_env")
    monkeypatch.setenv("TOKEN_SERVER_URL", "https://ignored.example")
    script = Script([ok({"balance": 7})])
    with TokenClient(transport=httpx.MockTransport(script)) as client:
        assert client.base_url == "https://tokens.example"
        assert client.get_balance("alice").balance == 7
    assert str(script.requests[0].url) == "https://tokens.example/api/tokens/balance/alice"
    assert script.requests[0].headers["authorization"] == "Bearer tb_from_env"


def test_configured_from_seed_001_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOKEN_SERVICE_URL", "TOKEN_SERVICE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TOKEN_SERVER_URL", "http://localhost:5000")
    monkeypatch.setenv("SERVER_API_KEY", "tb_seed_001")
    with TokenClient() as client:
        assert client.base_url == "http://localhost:5000"
        assert "tb_seed_001" not in repr(client)


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_SERVICE_URL", "https://env.example")
    with TokenClient("https://argument.example", "tb_arg") as client:
        assert client.base_url == "https://argument.example"


@pytest.mark.parametrize("missing", ["url", "key"])
def test_missing_configuration_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    for name in (
        "TOKEN_SERVICE_URL",
        "TOKEN_SERVER_URL",
        "TOKEN_SERVICE_API_KEY",
        "SERVER_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    arguments = {"url": (None, "tb_key"), "key": ("http://x", None)}[missing]
    with pytest.raises(ValueError, match="TOKEN_SERVICE_URL" if missing == "url" else "API_KEY"):
        TokenClient(*arguments)


def test_named_defaults() -> None:
    assert DEFAULT_TIMEOUT.connect == 5.0
    assert DEFAULT_TIMEOUT.read == 10.0
    assert DEFAULT_LIMITS.max_connections == 100


def test_async_client_mirrors_the_sync_client() -> None:
    def public(cls: type) -> dict[str, list[inspect.Parameter]]:
        return {
            name: list(inspect.signature(member).parameters.values())
            for name, member in vars(cls).items()
            if not name.startswith("_") and callable(member)
        }

    sync_methods = public(TokenClient)
    async_methods = public(AsyncTokenClient)
    sync_methods["aclose"] = sync_methods.pop("close")
    assert sync_methods == async_methods
    for name, member in vars(AsyncTokenClient).items():
        if name in {"charge", "reserve", "token_process"} or name.startswith("_"):
            continue
        if callable(member):
            assert inspect.iscoroutinefunction(member), name


# --- dialect A ------------------------------------------------------------------------------


def test_get_balance() -> None:
    data = {
        "userId": "a/b",
        "balance": 100,
        "available": 0,
        "held": 100,
        "spent": 5,
        "status": "active",
        "plan": "starter",
    }
    script = Script([ok(data)])
    with sync_client(script) as client:
        balance = client.get_balance("a/b")
    assert balance == Balance("a/b", 100, 0, 100, 5, "active", "starter")
    request = script.requests[0]
    assert request.method == "GET"
    assert request.url.raw_path == b"/api/tokens/balance/a%2Fb"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert "idempotency-key" not in request.headers


def test_deduct_sends_one_key_as_reference_id_and_header() -> None:
    script = Script([ok(RECEIPT)])
    with sync_client(script) as client:
        receipt = client.deduct("alice", 5, description="Image gen", metadata={"model": "x"})
    assert receipt == Receipt(95, 3, "tx-1", replayed=False)
    body = script.body()
    assert body == {
        "userId": "alice",
        "amount": 5,
        "description": "Image gen",
        "referenceId": body["referenceId"],
        "metadata": {"model": "x"},
    }
    assert is_uuid(body["referenceId"])
    assert script.requests[0].headers["idempotency-key"] == body["referenceId"]
    assert script.paths == ["/api/tokens/deduct"]


def test_a_given_reference_id_is_used_as_is() -> None:
    script = Script([ok(RECEIPT)])
    with sync_client(script) as client:
        client.deduct("alice", 5, reference_id="job-1", operation_type="image_generation")
    assert script.body()["referenceId"] == "job-1"
    assert script.body()["operationType"] == "image_generation"
    assert script.requests[0].headers["idempotency-key"] == "job-1"


def test_each_logical_call_gets_its_own_key() -> None:
    script = Script([ok(RECEIPT)])
    with sync_client(script) as client:
        client.deduct("alice", 5)
        client.deduct("alice", 5)
    assert script.body(0)["referenceId"] != script.body(1)["referenceId"]


def test_refund_credit_and_wallet() -> None:
    script = Script(
        [
            ok(RECEIPT),
            ok(RECEIPT),
            ok({"userId": "bob", "balance": 100, "created": True, "welcomeBonus": 100}),
        ]
    )
    with sync_client(script) as client:
        client.refund("alice", 5, ledger_entry_id=3, description="Refund")
        client.credit("alice", 50, operation_type="purchase", reference_id="order-9")
        wallet = client.open_wallet("bob")
    assert script.paths == ["/api/tokens/refund", "/api/tokens/credit", "/api/users"]
    assert script.body(0)["ledgerEntryId"] == 3
    assert "refundOf" not in script.body(0)
    assert script.body(1) == {
        "userId": "alice",
        "amount": 50,
        "operationType": "purchase",
        "referenceId": "order-9",
    }
    assert wallet.created and wallet.welcome_bonus == 100


def test_holds() -> None:
    hold_id = HOLD_ID
    captured = HOLD | {"status": "captured", "capturedAmount": 30, "balance": 70}
    script = Script([ok(HOLD), ok(captured), ok(HOLD | {"status": "voided"}), ok(HOLD)])
    with sync_client(script) as client:
        placed = client.hold("alice", 50, ttl_seconds=60)
        settled = client.capture(hold_id, 30)
        voided = client.void(hold_id)
        client.get_hold(hold_id)
    assert placed.hold_id == hold_id and placed.available == 50
    assert placed.expires_at == datetime(2026, 1, 1, 0, 15, tzinfo=UTC)
    assert settled.captured_amount == 30 and settled.balance == 70
    assert voided.status == "voided"
    assert script.paths == [
        "/api/tokens/holds",
        f"/api/tokens/holds/{hold_id}/capture",
        f"/api/tokens/holds/{hold_id}/void",
        f"/api/tokens/holds/{hold_id}",
    ]
    assert script.body(0)["ttlSeconds"] == 60
    assert script.body(1)["amount"] == 30 and is_uuid(script.body(1)["referenceId"])
    assert script.body(2) == {}


def test_ledger_stats_costs_estimate() -> None:
    entry = {
        "id": 9,
        "transactionId": "tx",
        "type": "usage",
        "amount": -5,
        "balanceBefore": 100,
        "balanceAfter": 95,
        "description": None,
        "metadata": {"k": "v"},
        "createdAt": "2026-01-01T00:00:00Z",
        "refundOf": None,
        "holdId": None,
    }
    script = Script(
        [
            ok({"entries": [entry], "limit": 10, "offset": 0, "userId": "alice"}),
            ok({"totalSpent": 5, "totalEarned": 100, "netChange": 95, "operationCount": 2}),
            ok(
                [
                    {
                        "action": "image",
                        "tokens": 10,
                        "estimatedUsd": "$0.001",
                        "estimatedUsdCents": 0,
                    }
                ]
            ),
            ok(
                {
                    "action": "image",
                    "cost": 10,
                    "exactCost": "10",
                    "currentBalance": 95,
                    "canAfford": True,
                    "remainingAfter": 85,
                    "available": 95,
                    "rule": {"type": "operation_cost"},
                }
            ),
        ]
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with sync_client(script) as client:
        entries = client.get_ledger("alice", limit=10, operation_type="usage", start_date=start)
        stats = client.get_stats("alice")
        costs = client.get_costs()
        estimate = client.estimate(user_id="alice", action="image")
        with pytest.raises(ValueError, match="timezone-aware"):
            client.get_stats("alice", end_date=datetime(2026, 1, 1))
    assert entries[0].amount == -5 and entries[0].operation_type == "usage"
    assert entries[0].metadata == {"k": "v"}
    assert script.requests[0].url.params["startDate"] == "2026-01-01T00:00:00+00:00"
    assert script.requests[0].url.params["type"] == "usage"
    assert stats.net_change == 95
    assert costs[0].estimated_usd == "$0.001"
    assert estimate.can_afford is True and estimate.remaining_after == 85
    assert script.body(3) == {"userId": "alice", "action": "image"}


# --- dialect B ------------------------------------------------------------------------------


def test_token_process_start_and_end() -> None:
    start = {"user_id": "alice", "token": 100, "available": 100, "status": "access-able"}
    end = {
        "user_id": "alice",
        "token": 88,
        "cost": 12,
        "status": "return-able",
        "exact_cost": "12",
        "transaction_id": "tx",
    }
    script = Script([process_ok(start), process_ok(end)])
    with sync_client(script) as client:
        started = client.start_token_process("alice", "summarize")
        ended = client.end_token_process(
            "alice",
            "summarize",
            input_token=10,
            output_token=40,
            model="gpt-4o",
            request_id="req-1",
        )
    assert started.accessible and started.token == 100 and started.hold_id is None
    assert ended.cost == 12 and ended.returnable
    for request in script.requests:
        assert request.headers["x-server-api-key"] == API_KEY
        assert "authorization" not in request.headers
    assert script.body(1) == {
        "user_id": "alice",
        "feature_endpoint_id": "summarize",
        "input_token": 10,
        "output_token": 40,
        "model": "gpt-4o",
        "request_id": "req-1",
    }
    assert script.requests[1].headers["idempotency-key"] == "req-1"


# --- answers that are not what they should be ----------------------------------------------


def test_a_2xx_without_data_is_a_service_error() -> None:
    script = Script([httpx.Response(200, json={"unexpected": True})])
    with sync_client(script) as client, pytest.raises(TokenServiceError, match="no data"):
        client.get_balance("alice")


def test_a_2xx_with_a_wrong_shape_is_a_service_error() -> None:
    script = Script([ok({"balance": "lots"})])
    with sync_client(script) as client, pytest.raises(TokenServiceError, match="balance"):
        client.get_balance("alice")


# --- async ----------------------------------------------------------------------------------


async def test_async_calls_send_the_same_requests() -> None:
    script = Script(
        [ok(RECEIPT), failure(402, {"error": "Insufficient tokens", "available": 1, "required": 5})]
    )
    async with async_client(script) as client:
        receipt = await client.deduct("alice", 5, reference_id="job-1")
        with pytest.raises(InsufficientTokensError) as refused:
            await client.deduct("alice", 5)
    assert receipt.balance == 95
    assert script.body(0)["referenceId"] == "job-1"
    assert refused.value.available == 1 and refused.value.is_insufficient_tokens
    assert str(script.requests[0].url).startswith(BASE_URL)
