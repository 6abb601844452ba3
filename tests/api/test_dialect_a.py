"""Token Service dialect over HTTP: every endpoint, every documented answer.

Each test runs on SQLite and PostgreSQL (the ``api`` fixture). Every refusal is
checked twice: the answer (status and ``{"error": ...}`` body) and the books, which
must be exactly as they were (ledger entries, balances, holds and the audit).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.api.conftest import PUBLIC_URL, Api
from tokenbank.api.routes.costs import format_usd, usd_cents
from tokenbank.config import MAX_AMOUNT_TOKENS, MAX_HOLD_TTL_SECONDS, MAX_METADATA_BYTES
from tokenbank.db.models import API_SCOPES

HOLD_ID = re.compile(r"^hold_[0-9a-f]{32}$")
TRANSACTION_ID = re.compile(r"^[0-9a-f-]{36}$")
UNKNOWN_HOLD = "hold_" + "0" * 32
T0 = "2026-01-01T00:00:00Z"  # the ManualClock's start
# For checks that touch no engine-specific code (routing, request parsing).
SQLITE_ONLY = pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)

CONFLICT = {
    "error": "Idempotency key was already used with a different request",
    "code": "idempotency_conflict",
}
WALLET_NOT_FOUND = {"error": "User wallet not found", "code": "wallet_not_found"}
HOLD_NOT_FOUND = {"error": "Hold not found", "code": "hold_not_found"}
HOLD_NOT_PENDING = {"error": "Hold is no longer pending", "code": "hold_not_pending"}
HOLD_EXPIRED = {"error": "Hold has expired", "code": "hold_expired"}


def insufficient(available: int, required: int) -> dict[str, Any]:
    return {
        "error": "Insufficient tokens",
        "code": "insufficient_tokens",
        "available": available,
        "required": required,
        "buyTokensUrl": PUBLIC_URL + "/tokens",
    }


@dataclass
class Books:
    """Everything a refused request must leave as it was."""

    users: tuple[str, ...]
    holds: tuple[str, ...] = ()
    state: Any = field(default=None)

    async def read(self, api: Api) -> Any:
        report = await api.tokens.audit()
        assert report.ok, report.problems
        ledger = api.tokens.get_ledger()
        return (
            report,
            [await ledger.get_user_entries(user, limit=500) for user in self.users],
            [await api.tokens.get_balance(user) for user in self.users],
            [await api.tokens.get_hold(hold) for hold in self.holds],
        )

    async def take(self, api: Api) -> Books:
        self.state = await self.read(api)
        return self

    async def assert_unchanged(self, api: Api, what: str = "") -> None:
        assert await self.read(api) == self.state, f"the books changed: {what}"


async def raw_books(api: Api) -> Any:
    """Every row a write could touch, in one cheap read (for checks after each of many
    requests; ``Books`` runs the full audit)."""
    engine = await api.tokens.engine()
    async with engine.connect() as conn:
        return [
            (await conn.execute(text(query))).all()
            for query in (
                "SELECT * FROM wallets ORDER BY id",
                "SELECT * FROM holds ORDER BY id",
                "SELECT COUNT(*), MAX(id) FROM ledger_entries",
                "SELECT COUNT(*) FROM ledger_transactions",
                "SELECT COUNT(*) FROM scheduled_credits",
            )
        ]


async def post(api: Api, path: str, body: Any = None, scope: str = "all", **kw: Any) -> Any:
    headers = {**api.headers(scope), **kw.pop("headers", {})}
    if body is None:
        return await api.client.post(path, headers=headers, **kw)
    return await api.client.post(path, json=body, headers=headers, **kw)


async def get(api: Api, path: str, scope: str = "all", **kw: Any) -> httpx.Response:
    return await api.client.get(path, headers=api.headers(scope), **kw)


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The ``data`` of a success answer."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"data"}, body
    return body["data"]


def refused(response: httpx.Response, status: int, expected: dict[str, Any] | None = None) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body.get("error"), str), body
    assert body["error"], body
    assert "data" not in body
    if expected is not None:
        assert body == expected
    return body


async def wallet(api: Api, user: str, tokens: int = 0) -> None:
    await api.tokens.open_wallet(user)
    if tokens:
        await api.tokens.credit(user, amount=tokens)


# --- authentication and scopes, every endpoint -------------------------------------------


async def test_every_endpoint_needs_a_key_with_its_scope(api: Api) -> None:
    await wallet(api, "u1", 1000)
    deducted = await api.tokens.debit("u1", amount=10)
    holds: list[str] = []
    for _ in range(2):
        placed = await api.tokens.hold("u1", 10)
        assert placed.hold_id is not None
        holds.append(placed.hold_id)
    endpoints: list[tuple[str, str, Any, str, int]] = [
        ("GET", "/api/tokens/balance/u1", None, "read", 200),
        ("POST", "/api/tokens/deduct", {"userId": "u1", "amount": 1}, "spend", 200),
        ("POST", "/api/tokens/refund", {"userId": "u1", "amount": 1}, "refund", 200),
        ("POST", "/api/tokens/credit", {"userId": "u1", "amount": 1}, "credit", 200),
        ("POST", "/api/tokens/holds", {"userId": "u1", "amount": 1}, "spend", 200),
        ("POST", f"/api/tokens/holds/{holds[0]}/capture", {"amount": 1}, "spend", 200),
        ("POST", f"/api/tokens/holds/{holds[1]}/void", {}, "spend", 200),
        ("GET", f"/api/tokens/holds/{holds[0]}", None, "read", 200),
        ("GET", "/api/tokens/ledger/u1", None, "read", 200),
        ("GET", "/api/tokens/stats/u1", None, "read", 200),
        ("POST", "/api/users", {"userId": "u2"}, "credit", 201),
        ("GET", "/api/users/u1", None, "read", 200),
        ("GET", "/api/costs", None, "read", 200),
    ]
    assert deducted.success
    books = await Books(("u1", "u2"), tuple(holds)).take(api)

    for method, path, body, scope, _ in endpoints:
        kw = {"json": body} if body is not None else {}
        no_key = await api.client.request(method, path, **kw)
        refused(no_key, 401, {"error": "Missing API key", "code": "unauthorized"})
        for headers in (
            {"Authorization": "Bearer ts_wrong"},
            {"x-server-api-key": "ts_wrong"},
            {"Authorization": f"Bearer {api.keys['all']}x"},
        ):
            wrong = await api.client.request(method, path, headers=headers, **kw)
            refused(wrong, 401, {"error": "Invalid API key", "code": "unauthorized"})
        for other in API_SCOPES:
            if other == scope:
                continue
            lacking = await api.client.request(method, path, headers=api.headers(other), **kw)
            expected = {"error": f"API key lacks the '{scope}' scope", "code": "forbidden"}
            refused(lacking, 403, expected)
        await books.assert_unchanged(api, f"{method} {path}")

    # A key with only the named scope is enough, in either header.
    for index, (method, path, body, scope, status) in enumerate(endpoints):
        kw = {"json": body} if body is not None else {}
        style = "bearer" if index % 2 else "server"
        response = await api.client.request(
            method, path, headers=api.headers(scope, style=style), **kw
        )
        ok(response, status)


@SQLITE_ONLY
async def test_unknown_routes_and_methods_answer_in_dialect_a(api: Api) -> None:
    not_allowed = {"error": "Method Not Allowed", "code": "method_not_allowed"}
    refused(await get(api, "/api/tokens/nothing"), 404, {"error": "Not Found", "code": "not_found"})
    refused(await get(api, "/api/tokens/deduct"), 405, not_allowed)
    refused(await post(api, "/api/costs", {}), 405, not_allowed)


@SQLITE_ONLY
async def test_missing_key_is_401_whatever_the_body(api: Api) -> None:
    response = await api.client.post(
        "/api/tokens/deduct", content=b"{", headers={"Content-Type": "application/json"}
    )
    refused(response, 401, {"error": "Missing API key", "code": "unauthorized"})


# --- balance ---------------------------------------------------------------------------


async def test_balance(api: Api) -> None:
    await wallet(api, "u1", 100)
    await api.tokens.hold("u1", 30)
    await api.tokens.debit("u1", amount=20)
    data = ok(await get(api, "/api/tokens/balance/u1", "read"))
    assert data == {
        "userId": "u1",
        "balance": 80,
        "available": 50,
        "held": 30,
        "spent": 20,
        "status": "active",
        "plan": None,
        # What the balance is made of (decision 13): the purchase's grant, 20 spent.
        "paid": 80,
        "promotional": 0,
        "nextExpiry": None,
    }
    refused(await get(api, "/api/tokens/balance/nobody"), 404, WALLET_NOT_FOUND)
    too_long = await get(api, "/api/tokens/balance/" + "x" * 129)
    assert refused(too_long, 422)["code"] == "invalid_request"


# --- deduct ------------------------------------------------------------------------------


async def test_deduct_and_insufficient_tokens(api: Api) -> None:
    await wallet(api, "u1", 100)
    data = ok(await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 30}, "spend"))
    assert data == {
        "balance": 70,
        "ledgerEntryId": data["ledgerEntryId"],
        "transactionId": data["transactionId"],
        "replayed": False,
    }
    assert isinstance(data["ledgerEntryId"], int)
    assert TRANSACTION_ID.match(data["transactionId"])
    [entry] = await api.tokens.get_ledger().get_user_entries("u1", operation_type="usage")
    assert (entry.id, entry.tokens_amount, entry.balance_after) == (data["ledgerEntryId"], -30, 70)

    books = await Books(("u1",)).take(api)
    too_much = await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 71})
    refused(too_much, 402, insufficient(available=70, required=71))
    # Held tokens are not available.
    await books.assert_unchanged(api, "402")
    await api.tokens.hold("u1", 50)
    books = await books.take(api)
    refused(
        await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 21}),
        402,
        insufficient(available=20, required=21),
    )
    refused(
        await post(api, "/api/tokens/deduct", {"userId": "nobody", "amount": 1}),
        404,
        WALLET_NOT_FOUND,
    )
    await books.assert_unchanged(api, "402 and 404")
    exact = ok(await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 20}))
    assert exact["balance"] == 50


async def test_deduct_by_operation_type_and_suspended_or_closed_wallets(api: Api) -> None:
    await wallet(api, "u1", 100)
    priced = await post(
        api,
        "/api/tokens/deduct",
        {"userId": "u1", "amount": 10, "operationType": "image_generation"},
    )
    assert ok(priced)["balance"] == 90
    entries = await api.tokens.get_ledger().get_user_entries(
        "u1", operation_type="image_generation"
    )
    assert len(entries) == 1

    await api.tokens.set_wallet_status("u1", "suspended")
    books = await Books(("u1",)).take(api)
    suspended = await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 1})
    assert refused(suspended, 403)["code"] == "wallet_suspended"
    await api.tokens.set_wallet_status("u1", "closed")
    books = await books.take(api)
    closed = await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 1})
    assert refused(closed, 403)["code"] == "wallet_closed"
    await books.assert_unchanged(api, "closed")


async def test_deduct_idempotency_by_reference_id_and_header(api: Api) -> None:
    await wallet(api, "u1", 100)
    body = {"userId": "u1", "amount": 10, "referenceId": "job-1", "description": "first"}
    first = ok(await post(api, "/api/tokens/deduct", body))
    assert first["replayed"] is False
    books = await Books(("u1",)).take(api)

    # The same key again: the first result, nothing changed. Descriptions and
    # metadata do not count (they often carry timestamps).
    again = ok(await post(api, "/api/tokens/deduct", {**body, "description": "retry"}))
    assert again == {**first, "replayed": True}
    await books.assert_unchanged(api, "referenceId replay")
    refused(await post(api, "/api/tokens/deduct", {**body, "amount": 11}), 409, CONFLICT)
    refused(await post(api, "/api/tokens/deduct", {**body, "userId": "u2"}), 409, CONFLICT)
    await books.assert_unchanged(api, "referenceId conflict")

    # The same through the Idempotency-Key header.
    plain = {"userId": "u1", "amount": 5}
    key = {"Idempotency-Key": "job-2"}
    by_header = ok(await post(api, "/api/tokens/deduct", plain, headers=key))
    assert by_header["balance"] == 85
    books = await books.take(api)
    replay = ok(await post(api, "/api/tokens/deduct", plain, headers=key))
    assert replay == {**by_header, "replayed": True}
    # The header and the body naming the same key are one key.
    same = ok(await post(api, "/api/tokens/deduct", {**plain, "referenceId": "job-2"}))
    assert same == {**by_header, "replayed": True}
    refused(
        await post(api, "/api/tokens/deduct", {**plain, "amount": 6}, headers=key), 409, CONFLICT
    )
    differ = await post(api, "/api/tokens/deduct", {**plain, "referenceId": "x"}, headers=key)
    refused(
        differ,
        400,
        {
            "error": "referenceId and Idempotency-Key differ: send one, or the same value",
            "code": "invalid_input",
        },
    )
    await books.assert_unchanged(api, "header replay and conflict")

    # Keys belong to the app: another app's "job-1" is a different request.
    other_app = ok(await post(api, "/api/tokens/deduct", body, "spend"))
    assert other_app["replayed"] is False
    assert other_app["balance"] == 75


# --- refund --------------------------------------------------------------------------------


async def test_refund_bounded_by_the_deduct_or_by_spent(api: Api) -> None:
    await wallet(api, "u1", 100)
    await wallet(api, "u2", 100)
    deduct = ok(await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 30}))
    entry = deduct["ledgerEntryId"]
    ok(await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 50}))  # spent: 80
    other = ok(await post(api, "/api/tokens/deduct", {"userId": "u2", "amount": 5}))
    ledger = api.tokens.get_ledger()
    [credit_entry] = await ledger.get_user_entries("u1", operation_type="purchase")

    named = {"userId": "u1", "amount": 20, "ledgerEntryId": entry}
    data = ok(await post(api, "/api/tokens/refund", named, "refund"))
    assert data == {
        "balance": 40,
        "ledgerEntryId": data["ledgerEntryId"],
        "transactionId": data["transactionId"],
        "replayed": False,
    }
    [refund_entry] = await ledger.get_user_entries("u1", operation_type="refund")
    assert (refund_entry.id, refund_entry.tokens_amount) == (data["ledgerEntryId"], 20)
    assert refund_entry.refund_of == deduct["transactionId"]

    books = await Books(("u1", "u2")).take(api)
    # 10 of the deduct remain (and 60 spent): the deduct is the bound.
    refused(
        await post(api, "/api/tokens/refund", {**named, "amount": 11}),
        409,
        {
            "error": "Refund exceeds what remains of the debit",
            "code": "refund_exceeds_debit",
            "available": 10,
            "required": 11,
        },
    )
    refused(
        await post(api, "/api/tokens/refund", {**named, "amount": 1, "ledgerEntryId": 10**9}),
        404,
        {"error": "No ledger entry with that id", "code": "debit_not_found"},
    )
    not_found = {
        "error": "The debit to refund was not found for this user",
        "code": "debit_not_found",
    }
    not_a_debit = {**named, "amount": 1, "ledgerEntryId": credit_entry.id}
    refused(await post(api, "/api/tokens/refund", not_a_debit), 404, not_found)
    someone_elses = {**named, "amount": 1, "ledgerEntryId": other["ledgerEntryId"]}
    refused(await post(api, "/api/tokens/refund", someone_elses), 404, not_found)
    # Without a named debit, a refund is bounded by what the user has spent (60).
    refused(
        await post(api, "/api/tokens/refund", {"userId": "u1", "amount": 61}),
        409,
        {
            "error": "Refund exceeds what the user has spent",
            "code": "refund_exceeds_spent",
            "available": 60,
            "required": 61,
        },
    )
    refused(
        await post(api, "/api/tokens/refund", {"userId": "nobody", "amount": 1}),
        404,
        WALLET_NOT_FOUND,
    )
    await books.assert_unchanged(api, "refund refusals")

    # The rest of the deduct, named by its transaction id this time, with a key.
    rest = {"userId": "u1", "amount": 10, "refundOf": deduct["transactionId"], "referenceId": "r1"}
    first = ok(await post(api, "/api/tokens/refund", rest))
    assert first["balance"] == 50
    books = await books.take(api)
    assert ok(await post(api, "/api/tokens/refund", rest)) == {**first, "replayed": True}
    key = {"Idempotency-Key": "r1"}
    no_ref = {k: v for k, v in rest.items() if k != "referenceId"}
    assert ok(await post(api, "/api/tokens/refund", no_ref, headers=key))["replayed"] is True
    refused(await post(api, "/api/tokens/refund", {**rest, "amount": 9}), 409, CONFLICT)
    refused(
        await post(api, "/api/tokens/refund", {**named, "amount": 1}),
        409,
        {
            "error": "Refund exceeds what remains of the debit",
            "code": "refund_exceeds_debit",
            "available": 0,
            "required": 1,
        },
    )
    await books.assert_unchanged(api, "after the deduct is fully refunded")


# --- credit --------------------------------------------------------------------------------


async def test_credit(api: Api) -> None:
    await wallet(api, "u1")
    data = ok(await post(api, "/api/tokens/credit", {"userId": "u1", "amount": 100}, "credit"))
    assert data == {
        "balance": 100,
        "ledgerEntryId": data["ledgerEntryId"],
        "transactionId": data["transactionId"],
        "replayed": False,
    }
    [entry] = await api.tokens.get_ledger().get_user_entries("u1")
    assert entry.operation_type == "admin_grant"  # the default
    for balance, kind in enumerate(
        ["purchase", "bonus", "admin_grant", "renewal", "auto_recharge"]
    ):
        credited = await post(
            api,
            "/api/tokens/credit",
            {"userId": "u1", "amount": 1, "operationType": kind, "metadata": {"k": kind}},
        )
        assert ok(credited)["balance"] == 101 + balance
    entries = await api.tokens.get_ledger().get_user_entries("u1", operation_type="renewal")
    assert entries[0].metadata == {"k": "renewal"}

    books = await Books(("u1",)).take(api)
    refused(
        await post(api, "/api/tokens/credit", {"userId": "nobody", "amount": 1}),
        404,
        WALLET_NOT_FOUND,
    )
    for kind in ("usage", "refund", "Purchase", "gift"):
        wrong = await post(
            api, "/api/tokens/credit", {"userId": "u1", "amount": 1, "operationType": kind}
        )
        assert refused(wrong, 422)["code"] == "invalid_request"
    await books.assert_unchanged(api, "credit refusals")

    body = {"userId": "u1", "amount": 7, "referenceId": "grant-1"}
    first = ok(await post(api, "/api/tokens/credit", body))
    books = await books.take(api)
    assert ok(await post(api, "/api/tokens/credit", body)) == {**first, "replayed": True}
    header = {"Idempotency-Key": "grant-1"}
    no_ref = {"userId": "u1", "amount": 7}
    assert ok(await post(api, "/api/tokens/credit", no_ref, headers=header)) == {
        **first,
        "replayed": True,
    }
    refused(await post(api, "/api/tokens/credit", {**body, "amount": 8}), 409, CONFLICT)
    refused(
        await post(api, "/api/tokens/credit", {**body, "operationType": "purchase"}), 409, CONFLICT
    )
    await books.assert_unchanged(api, "credit replays")

    await api.tokens.set_wallet_status("u1", "closed")
    books = await books.take(api)
    closed = await post(api, "/api/tokens/credit", {"userId": "u1", "amount": 1})
    assert refused(closed, 403)["code"] == "wallet_closed"
    await books.assert_unchanged(api, "closed")


# --- holds ---------------------------------------------------------------------------------


async def test_hold_capture_lifecycle(api: Api) -> None:
    await wallet(api, "u1", 100)
    placed = ok(
        await post(
            api,
            "/api/tokens/holds",
            {"userId": "u1", "amount": 40, "ttlSeconds": 60, "description": "render"},
            "spend",
        )
    )
    hold_id = placed["holdId"]
    assert HOLD_ID.match(hold_id)
    assert placed == {
        "holdId": hold_id,
        "userId": "u1",
        "status": "pending",
        "amount": 40,
        "capturedAmount": None,
        "expiresAt": "2026-01-01T00:01:00Z",
        "balance": 100,
        "available": 60,
        "ledgerEntryId": None,
        "transactionId": None,
        "replayed": False,
    }
    view = ok(await get(api, f"/api/tokens/holds/{hold_id}", "read"))
    assert view == {
        "holdId": hold_id,
        "userId": "u1",
        "status": "pending",
        "amount": 40,
        "capturedAmount": None,
        "operationType": "usage",
        "expiresAt": "2026-01-01T00:01:00Z",
        "createdAt": T0,
        "resolvedAt": None,
    }
    balance = ok(await get(api, "/api/tokens/balance/u1"))
    assert (balance["held"], balance["available"]) == (40, 60)
    refused(
        await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 61}),
        402,
        insufficient(available=60, required=61),
    )

    api.clock.advance(30)
    captured = ok(await post(api, f"/api/tokens/holds/{hold_id}/capture", {"amount": 25}, "spend"))
    assert captured == {
        **placed,
        "status": "captured",
        "capturedAmount": 25,
        "balance": 75,
        "available": 75,
        "ledgerEntryId": captured["ledgerEntryId"],
        "transactionId": captured["transactionId"],
    }
    assert isinstance(captured["ledgerEntryId"], int)
    [entry] = await api.tokens.get_ledger().get_user_entries("u1", operation_type="usage")
    assert (entry.id, entry.tokens_amount, entry.hold_id) == (
        captured["ledgerEntryId"],
        -25,
        hold_id,
    )

    books = await Books(("u1",), (hold_id,)).take(api)
    again = ok(await post(api, f"/api/tokens/holds/{hold_id}/capture", {"amount": 25}))
    assert again == {**captured, "replayed": True}
    refused(
        await post(api, f"/api/tokens/holds/{hold_id}/capture", {"amount": 26}),
        409,
        HOLD_NOT_PENDING,
    )
    refused(await post(api, f"/api/tokens/holds/{hold_id}/void"), 409, HOLD_NOT_PENDING)
    await books.assert_unchanged(api, "after capture")
    assert ok(await get(api, f"/api/tokens/holds/{hold_id}")) == {
        **view,
        "status": "captured",
        "capturedAmount": 25,
        "resolvedAt": "2026-01-01T00:00:30Z",
    }

    # A refund can name the capture's entry like a deduct's.
    refund = {"userId": "u1", "amount": 25, "ledgerEntryId": captured["ledgerEntryId"]}
    assert ok(await post(api, "/api/tokens/refund", refund))["balance"] == 100


async def test_void_and_unknown_or_malformed_holds(api: Api) -> None:
    await wallet(api, "u1", 100)
    hold_id = ok(await post(api, "/api/tokens/holds", {"userId": "u1", "amount": 40}))["holdId"]
    voided = ok(await post(api, f"/api/tokens/holds/{hold_id}/void", scope="spend"))
    assert voided == {
        "holdId": hold_id,
        "userId": "u1",
        "status": "voided",
        "amount": 40,
        "capturedAmount": None,
        "expiresAt": "2026-01-01T00:15:00Z",  # the default TTL: 900 s
        "balance": 100,
        "available": 100,
        "ledgerEntryId": None,
        "transactionId": None,
        "replayed": False,
    }
    books = await Books(("u1",), (hold_id,)).take(api)
    # Voiding again (empty body, {} or null) is a success that changes nothing.
    empty_bodies: tuple[dict[str, Any] | None, ...] = (None, {})
    for body in empty_bodies:
        assert ok(await post(api, f"/api/tokens/holds/{hold_id}/void", body)) == {
            **voided,
            "replayed": True,
        }
    key = {"Idempotency-Key": "void-1"}
    assert ok(await post(api, f"/api/tokens/holds/{hold_id}/void", headers=key))["replayed"]
    refused(
        await post(api, f"/api/tokens/holds/{hold_id}/capture", {"amount": 1}),
        409,
        HOLD_NOT_PENDING,
    )
    extra = await post(api, f"/api/tokens/holds/{hold_id}/void", {"reason": "x"})
    assert refused(extra, 422)["code"] == "invalid_request"
    assert ok(await get(api, f"/api/tokens/holds/{hold_id}"))["status"] == "voided"

    for bad in (UNKNOWN_HOLD, "nope", "hold_" + "A" * 32, hold_id + "0", hold_id[:-1], "%20"):
        refused(await get(api, f"/api/tokens/holds/{bad}"), 404, HOLD_NOT_FOUND)
        refused(await post(api, f"/api/tokens/holds/{bad}/void"), 404, HOLD_NOT_FOUND)
        capture = await post(api, f"/api/tokens/holds/{bad}/capture", {"amount": 1})
        refused(capture, 404, HOLD_NOT_FOUND)
    await books.assert_unchanged(api, "void replays and unknown holds")


async def test_hold_refusals_and_idempotency(api: Api) -> None:
    await wallet(api, "u1", 100)
    books = await Books(("u1",)).take(api)
    refused(
        await post(api, "/api/tokens/holds", {"userId": "u1", "amount": 101}),
        402,
        insufficient(available=100, required=101),
    )
    nobody = await post(api, "/api/tokens/holds", {"userId": "nobody", "amount": 1})
    assert refused(nobody, 404).items() >= WALLET_NOT_FOUND.items()  # see the xfail below
    unknown_type = {"userId": "u1", "amount": 1, "operationType": "no_such_action"}
    assert (
        refused(await post(api, "/api/tokens/holds", unknown_type), 400)["code"] == "invalid_input"
    )
    await books.assert_unchanged(api, "hold refusals")

    body = {"userId": "u1", "amount": 40, "referenceId": "h-1", "operationType": "image_generation"}
    first = ok(await post(api, "/api/tokens/holds", body))
    books = await Books(("u1",), (first["holdId"],)).take(api)
    assert ok(await post(api, "/api/tokens/holds", body)) == {**first, "replayed": True}
    header = {"Idempotency-Key": "h-1"}
    no_ref = {k: v for k, v in body.items() if k != "referenceId"}
    assert ok(await post(api, "/api/tokens/holds", no_ref, headers=header)) == {
        **first,
        "replayed": True,
    }
    refused(await post(api, "/api/tokens/holds", {**body, "amount": 41}), 409, CONFLICT)
    refused(await post(api, "/api/tokens/holds", {**body, "ttlSeconds": 5}), 409, CONFLICT)
    await books.assert_unchanged(api, "hold replays")
    assert ok(await get(api, "/api/tokens/balance/u1"))["held"] == 40

    # A capture's key: the same capture replays, the key on another hold conflicts.
    hold_id = first["holdId"]
    capture = {"amount": 10, "referenceId": "c-1"}
    other = ok(await post(api, "/api/tokens/holds", {"userId": "u1", "amount": 5}))["holdId"]
    captured = ok(await post(api, f"/api/tokens/holds/{hold_id}/capture", capture))
    books = await Books(("u1",), (hold_id, other)).take(api)
    assert ok(await post(api, f"/api/tokens/holds/{hold_id}/capture", capture)) == {
        **captured,
        "replayed": True,
    }
    key = {"Idempotency-Key": "c-1"}
    replay = ok(
        await post(api, f"/api/tokens/holds/{hold_id}/capture", {"amount": 10}, headers=key)
    )
    assert replay == {**captured, "replayed": True}
    refused(await post(api, f"/api/tokens/holds/{other}/capture", capture), 409, CONFLICT)
    await books.assert_unchanged(api, "capture replays")


@SQLITE_ONLY
async def test_hold_for_unknown_user_answers_like_deduct(api: Api) -> None:
    hold = await post(api, "/api/tokens/holds", {"userId": "nobody", "amount": 1})
    deduct = await post(api, "/api/tokens/deduct", {"userId": "nobody", "amount": 1})
    assert refused(deduct, 404, WALLET_NOT_FOUND)
    refused(hold, 404, WALLET_NOT_FOUND)


async def test_hold_expiry(api: Api) -> None:
    await wallet(api, "u1", 100)
    hold_id = ok(
        await post(api, "/api/tokens/holds", {"userId": "u1", "amount": 40, "ttlSeconds": 60})
    )["holdId"]
    early = ok(
        await post(api, "/api/tokens/holds", {"userId": "u1", "amount": 10, "ttlSeconds": 60})
    )["holdId"]
    api.clock.advance(59)
    assert (
        ok(await post(api, f"/api/tokens/holds/{early}/capture", {"amount": 10}))["balance"] == 90
    )

    api.clock.advance(1)  # exactly at expiresAt: expired
    view = ok(await get(api, f"/api/tokens/holds/{hold_id}"))
    assert (view["status"], view["resolvedAt"]) == ("expired", None)
    books = await Books(("u1",), (hold_id,)).take(api)
    refused(
        await post(api, f"/api/tokens/holds/{hold_id}/capture", {"amount": 10}), 409, HOLD_EXPIRED
    )
    refused(
        await post(api, f"/api/tokens/holds/{hold_id}/capture", {"amount": 0}), 409, HOLD_EXPIRED
    )
    await books.assert_unchanged(api, "capture of an expired hold")

    # The sweeper releases it; voiding a released hold is then a harmless repeat.
    assert await api.tokens.release_expired_holds() == 1
    assert ok(await get(api, "/api/tokens/balance/u1"))["available"] == 90
    voided = ok(await post(api, f"/api/tokens/holds/{hold_id}/void"))
    assert (voided["status"], voided["replayed"], voided["available"]) == ("expired", True, 90)
    view = ok(await get(api, f"/api/tokens/holds/{hold_id}"))
    assert (view["status"], view["resolvedAt"]) == ("expired", "2026-01-01T00:01:00Z")


async def test_capture_zero_and_capture_beyond_the_hold(api: Api) -> None:
    await wallet(api, "u1", 100)
    zero = ok(await post(api, "/api/tokens/holds", {"userId": "u1", "amount": 30}))["holdId"]
    nothing = ok(await post(api, f"/api/tokens/holds/{zero}/capture", {"amount": 0}))
    assert (nothing["status"], nothing["capturedAmount"], nothing["ledgerEntryId"]) == (
        "captured",
        0,
        None,
    )
    assert (nothing["balance"], nothing["available"]) == (100, 100)
    again = ok(await post(api, f"/api/tokens/holds/{zero}/capture", {"amount": 0}))
    assert again == {**nothing, "replayed": True}
    assert await api.tokens.get_ledger().get_user_entries("u1", operation_type="usage") == []

    # Work that already happened is recorded in full, past zero; the wallet is then
    # suspended until a top-up covers it.
    big = ok(await post(api, "/api/tokens/holds", {"userId": "u1", "amount": 40}))["holdId"]
    over = ok(await post(api, f"/api/tokens/holds/{big}/capture", {"amount": 150}))
    assert (over["capturedAmount"], over["balance"], over["available"]) == (150, -50, -50)
    user = ok(await get(api, "/api/users/u1"))
    assert (user["status"], user["balance"], user["spent"]) == ("suspended", -50, 150)
    books = await Books(("u1",)).take(api)
    suspended = await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 1})
    assert refused(suspended, 403)["code"] == "wallet_suspended"
    on_hold = await post(api, "/api/tokens/holds", {"userId": "u1", "amount": 1})
    assert refused(on_hold, 403)["code"] == "wallet_suspended"
    await books.assert_unchanged(api, "suspended")
    assert (
        ok(await post(api, "/api/tokens/credit", {"userId": "u1", "amount": 60}))["balance"] == 10
    )
    assert ok(await get(api, "/api/users/u1"))["status"] == "active"
    assert (await api.tokens.audit()).ok


# --- ledger and statistics -----------------------------------------------------------------


async def _history(api: Api) -> dict[str, Any]:
    """credit 100 @0s, deduct 30 @10s, refund 5 @20s, hold+capture 7 @30s."""
    await wallet(api, "u1")
    credit = ok(await post(api, "/api/tokens/credit", {"userId": "u1", "amount": 100}))
    api.clock.advance(10)
    deduct = ok(
        await post(
            api,
            "/api/tokens/deduct",
            {"userId": "u1", "amount": 30, "description": "chat", "metadata": {"model": "m1"}},
        )
    )
    api.clock.advance(10)
    refund = ok(
        await post(
            api,
            "/api/tokens/refund",
            {"userId": "u1", "amount": 5, "ledgerEntryId": deduct["ledgerEntryId"]},
        )
    )
    api.clock.advance(10)
    hold_id = ok(await post(api, "/api/tokens/holds", {"userId": "u1", "amount": 9}))["holdId"]
    capture = ok(await post(api, f"/api/tokens/holds/{hold_id}/capture", {"amount": 7}))
    return {
        "credit": credit,
        "deduct": deduct,
        "refund": refund,
        "capture": capture,
        "hold": hold_id,
    }


async def test_ledger(api: Api) -> None:
    made = await _history(api)
    data = ok(await get(api, "/api/tokens/ledger/u1", "read"))
    assert (data["limit"], data["offset"], data["userId"]) == (50, 0, "u1")
    assert set(data) == {"entries", "limit", "offset", "userId"}
    capture, refund, deduct, credit = data["entries"]
    assert deduct == {
        "id": made["deduct"]["ledgerEntryId"],
        "transactionId": made["deduct"]["transactionId"],
        "type": "usage",
        "amount": -30,
        "balanceBefore": 100,
        "balanceAfter": 70,
        "description": "chat",
        "metadata": {"model": "m1"},
        "createdAt": "2026-01-01T00:00:10Z",
        "refundOf": None,
        "holdId": None,
    }
    assert (credit["type"], credit["amount"], credit["createdAt"]) == ("admin_grant", 100, T0)
    assert (refund["type"], refund["amount"], refund["refundOf"]) == (
        "refund",
        5,
        made["deduct"]["transactionId"],
    )
    assert (capture["amount"], capture["holdId"], capture["balanceAfter"]) == (
        -7,
        made["hold"],
        68,
    )

    async def ids(query: str) -> list[int]:
        page = ok(await get(api, "/api/tokens/ledger/u1" + query))
        return [entry["id"] for entry in page["entries"]]

    every = [entry["id"] for entry in data["entries"]]
    assert await ids("?limit=2") == every[:2]
    assert await ids("?limit=2&offset=2") == every[2:]
    assert await ids("?offset=4") == []
    paged = ok(await get(api, "/api/tokens/ledger/u1?limit=3&offset=1"))
    assert (paged["limit"], paged["offset"]) == (3, 1)
    assert await ids("?type=usage") == [capture["id"], deduct["id"]]
    assert await ids("?type=refund") == [refund["id"]]
    assert await ids("?type=renewal") == []
    # Both ends inclusive; any timezone.
    assert await ids("?startDate=2026-01-01T00:00:10Z&endDate=2026-01-01T00:00:20Z") == [
        refund["id"],
        deduct["id"],
    ]
    assert await ids("?startDate=2026-01-01T01:00:20%2B01:00") == [capture["id"], refund["id"]]
    assert await ids("?endDate=2025-12-31T23:59:59.999999Z") == []

    refused(await get(api, "/api/tokens/ledger/nobody"), 404, WALLET_NOT_FOUND)
    bad_queries = {
        "?limit=0": "query.limit",
        "?limit=501": "query.limit",
        "?limit=abc": "query.limit",
        "?limit=1.5": "query.limit",
        "?limit=true": "query.limit",
        "?offset=-1": "query.offset",
        "?offset=99999999999999999999999": "query.offset",
        "?type=Usage": "query.type",
        "?type=" + "a" * 65: "query.type",
        "?startDate=2026-01-01": "query.startDate",
        "?startDate=2026-01-01T00:00:00": "query.startDate",
        "?endDate=2026-01-01T00:00:00": "query.endDate",
        "?startDate=garbage": "query.startDate",
        "?startDate=1767225600": "query.startDate",
        "?startDate=2026-01-01T00:00:00+01:00": "query.startDate",  # "+" decodes to " "
        "?startDate=0001-01-01T00:00:00%2B01:00": "query.startDate",
        "?startDate=2026-01-02T00:00:00Z&endDate=2026-01-01T00:00:00Z": "query.startDate",
    }
    for query, name in bad_queries.items():
        body = refused(await get(api, "/api/tokens/ledger/u1" + query), 422)
        assert body["code"] == "invalid_request", query
        assert body["details"][0]["field"] == name, query
        assert name in body["error"], query
    naive = refused(await get(api, "/api/tokens/ledger/u1?startDate=2026-01-01T00:00:00"), 422)
    assert "timezone" in naive["error"]


async def test_stats(api: Api) -> None:
    await _history(api)
    data = ok(await get(api, "/api/tokens/stats/u1", "read"))
    assert data == {"totalSpent": 37, "totalEarned": 105, "netChange": 68, "operationCount": 4}
    window = ok(
        await get(
            api, "/api/tokens/stats/u1?startDate=2026-01-01T00:00:10Z&endDate=2026-01-01T00:00:20Z"
        )
    )
    assert window == {"totalSpent": 30, "totalEarned": 5, "netChange": -25, "operationCount": 2}
    empty = ok(await get(api, "/api/tokens/stats/u1?startDate=2027-01-01T00:00:00Z"))
    assert empty == {"totalSpent": 0, "totalEarned": 0, "netChange": 0, "operationCount": 0}
    await wallet(api, "fresh")
    assert ok(await get(api, "/api/tokens/stats/fresh"))["operationCount"] == 0

    refused(await get(api, "/api/tokens/stats/nobody"), 404, WALLET_NOT_FOUND)
    for query in (
        "?startDate=2026-01-01",
        "?endDate=yesterday",
        "?startDate=2026-01-02T00:00:00Z&endDate=2026-01-01T00:00:00Z",
    ):
        assert refused(await get(api, "/api/tokens/stats/u1" + query), 422)["code"] == (
            "invalid_request"
        )


# --- users -------------------------------------------------------------------------------


async def test_users(api: Api) -> None:
    created = await post(api, "/api/users", {"userId": "alice"}, "credit")
    assert ok(created, 201) == {"userId": "alice", "balance": 0, "created": True, "welcomeBonus": 0}
    books = await Books(("alice",)).take(api)
    existing = ok(await post(api, "/api/users", {"userId": "alice"}), 200)
    assert existing == {"userId": "alice", "balance": 0, "created": False, "welcomeBonus": 0}
    await books.assert_unchanged(api, "opening an open wallet")

    api.tokens.welcome_bonus_tokens = 10_000
    bonus = ok(await post(api, "/api/users", {"userId": "bob"}), 201)
    assert bonus == {"userId": "bob", "balance": 10_000, "created": True, "welcomeBonus": 10_000}
    again = ok(await post(api, "/api/users", {"userId": "bob"}), 200)
    assert again == {"userId": "bob", "balance": 10_000, "created": False, "welcomeBonus": 0}
    [entry] = await api.tokens.get_ledger().get_user_entries("bob")
    assert (entry.operation_type, entry.tokens_amount) == ("bonus", 10_000)

    api.clock.advance(5)
    await api.tokens.hold("bob", 100)
    await api.tokens.debit("bob", amount=50)
    assert ok(await get(api, "/api/users/bob", "read")) == {
        "userId": "bob",
        "balance": 9_950,
        "available": 9_850,
        "held": 100,
        "spent": 50,
        "status": "active",
        "plan": None,
        "paid": 0,
        "promotional": 9_950,  # the welcome bonus, 50 spent
        "nextExpiry": None,
        "lastRenewalAt": None,
        "createdAt": T0,
    }
    refused(await get(api, "/api/users/nobody"), 404, WALLET_NOT_FOUND)

    books = await Books(("alice", "bob")).take(api)
    wallets = books.state[0].wallets
    for body in (
        {},
        {"userId": ""},
        {"userId": "   "},
        {"userId": 5},
        {"userId": None},
        {"userId": "x" * 129},
        {"userId": "a\u0000b"},
        {"userId": "carol", "plan": "pro"},
        ["carol"],
    ):
        assert refused(await post(api, "/api/users", body), 422)["code"] == "invalid_request", body
    await books.assert_unchanged(api, "bad user bodies")
    assert (await api.tokens.audit()).wallets == wallets


# --- costs -------------------------------------------------------------------------------


async def test_costs(api: Api) -> None:
    await api.tokens.set_operation_cost("zz_dollar", 10_000)
    await api.tokens.set_operation_cost("zz_exact", 12_345)
    await api.tokens.set_operation_cost("zz_half_cent", 50)
    await api.tokens.set_operation_cost("zz_one", 1)
    data = ok(await get(api, "/api/costs", "read"))
    table = await api.tokens.get_operation_costs()
    assert [row["action"] for row in data] == sorted(table)
    assert all(
        set(row) == {"action", "tokens", "estimatedUsd", "estimatedUsdCents"} for row in data
    )
    estimates = {
        row["action"]: (row["tokens"], row["estimatedUsd"], row["estimatedUsdCents"])
        for row in data
    }
    assert {action: tokens for action, (tokens, _, _) in estimates.items()} == table
    assert estimates["zz_dollar"] == (10_000, "$1.00", 100)
    assert estimates["zz_exact"] == (12_345, "$1.2345", 123)
    assert estimates["zz_half_cent"] == (50, "$0.005", 1)
    assert estimates["zz_one"] == (1, "$0.0001", 0)

    # The rate is TOKENBANK_TOKENS_PER_USD.
    api.services.settings.tokens_per_usd = 3
    data = ok(await get(api, "/api/costs"))
    assert {row["action"]: row["estimatedUsd"] for row in data}["zz_one"] == "$0.3333"


@pytest.mark.parametrize(
    ("tokens", "per_usd", "usd", "cents"),
    [
        (10, 10_000, "$0.001", 0),
        (100, 10_000, "$0.01", 1),
        (1, 10_000, "$0.0001", 0),
        (49, 10_000, "$0.0049", 0),
        (50, 10_000, "$0.005", 1),
        (10_000, 10_000, "$1.00", 100),
        (12_345, 10_000, "$1.2345", 123),
        (1, 3, "$0.3333", 33),
        (2, 3, "$0.6667", 67),
        (1, 20_000, "$0.0001", 0),  # 0.00005: half-up
        (1, 30_000, "$0.00", 0),  # 0.0000333...
        (3, 20_000, "$0.0002", 0),  # 0.00015: half-up
        (MAX_AMOUNT_TOKENS, 1, "$1000000000000.00", 100_000_000_000_000),
        (MAX_AMOUNT_TOKENS, 10_000, "$100000000.00", 10_000_000_000),
    ],
)
def test_usd_format(tokens: int, per_usd: int, usd: str, cents: int) -> None:
    assert format_usd(tokens, per_usd) == usd
    assert usd_cents(tokens, per_usd) == cents


# --- the table of bad input ----------------------------------------------------------------


@dataclass
class Bad:
    name: str
    status: int
    code: str | None  # None: any {"error": ...} body (starlette's own 400s have no code)
    body: Any = None  # JSON to send; ignored when raw is set
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    path: str | None = None  # another endpoint than the base's
    empty: bool = False  # send no body at all


def _amount_cases(base: dict[str, Any], *, zero_ok: bool = False) -> list[Bad]:
    values: list[tuple[str, Any]] = [
        ("amount 1.5", 1.5),
        ("amount 1.0", 1.0),
        ("amount '5'", "5"),
        ("amount true", True),
        ("amount null", None),
        ("amount -1", -1),
        ("amount > max", MAX_AMOUNT_TOKENS + 1),
        ("amount 10**30", 10**30),
        ("amount [5]", [5]),
        ("amount {}", {}),
    ]
    if not zero_ok:
        values.append(("amount 0", 0))
    cases = [Bad(name, 422, "invalid_request", {**base, "amount": value}) for name, value in values]
    missing = {k: v for k, v in base.items() if k != "amount"}
    cases.append(Bad("amount missing", 422, "invalid_request", missing))
    return cases


def _user_cases(base: dict[str, Any]) -> list[Bad]:
    values: list[tuple[str, Any]] = [
        ("userId empty", ""),
        ("userId blank", "   "),
        ("userId 129 chars", "u" * 129),
        ("userId number", 5),
        ("userId null", None),
        ("userId NUL", "u\u00001"),
        ("userId list", ["u1"]),
    ]
    cases = [Bad(name, 422, "invalid_request", {**base, "userId": value}) for name, value in values]
    missing = {k: v for k, v in base.items() if k != "userId"}
    cases.append(Bad("userId missing", 422, "invalid_request", missing))
    return cases


def _text_cases(base: dict[str, Any]) -> list[Bad]:
    too_big = {"blob": "x" * (MAX_METADATA_BYTES + 1)}
    return [
        Bad("description 501 chars", 422, "invalid_request", {**base, "description": "d" * 501}),
        Bad("description number", 422, "invalid_request", {**base, "description": 5}),
        Bad("description NUL", 400, "invalid_input", {**base, "description": "a\u0000"}),
        Bad("referenceId 256 chars", 422, "invalid_request", {**base, "referenceId": "r" * 256}),
        Bad("referenceId empty", 422, "invalid_request", {**base, "referenceId": ""}),
        Bad("referenceId number", 422, "invalid_request", {**base, "referenceId": 7}),
        Bad("metadata list", 422, "invalid_request", {**base, "metadata": [1]}),
        Bad("metadata string", 422, "invalid_request", {**base, "metadata": "{}"}),
        Bad("metadata too large", 400, "invalid_input", {**base, "metadata": too_big}),
        Bad("metadata NaN", 400, "invalid_input", raw=_raw(base, ', "metadata": {"a": NaN}')),
        Bad("Idempotency-Key blank", 400, "invalid_input", base, headers={"Idempotency-Key": "  "}),
        Bad(
            "Idempotency-Key 256 chars",
            400,
            "invalid_input",
            base,
            headers={"Idempotency-Key": "k" * 256},
        ),
        Bad(
            "referenceId differs from Idempotency-Key",
            400,
            "invalid_input",
            {**base, "referenceId": "a"},
            headers={"Idempotency-Key": "b"},
        ),
    ]


def _raw(base: dict[str, Any], extra: str) -> bytes:
    return (json.dumps(base)[:-1] + extra + "}").encode()


def _envelope_cases(base: dict[str, Any]) -> list[Bad]:
    text = json.dumps(base).encode()
    oversized = {**base, "metadata": {"blob": "x" * (64 * 1024)}}
    return [
        Bad("malformed JSON", 422, "invalid_request", raw=text[:-3]),
        Bad("trailing garbage", 422, "invalid_request", raw=text + b"x"),
        Bad("JSON array", 422, "invalid_request", [base]),
        Bad("JSON string", 422, "invalid_request", raw=b'"hello"'),
        Bad("JSON null", 422, "invalid_request", raw=b"null"),
        Bad("empty body", 422, "invalid_request", raw=b""),
        Bad("unknown field", 422, "invalid_request", {**base, "unexpected": 1}),
        Bad("field in other case", 422, "invalid_request", {**base, "UserID": "u1"}),
        Bad("invalid UTF-8", 400, None, raw=text.replace(b"}", b',"description":"\xff"}')),
        Bad(
            "nested 20,000 deep",
            400,
            None,
            raw=_raw(base, ', "metadata": ' + "[" * 20_000 + "]" * 20_000),
        ),
        Bad("body > 64 KiB", 413, "payload_too_large", oversized),
        Bad(
            "text/plain",
            415,
            "unsupported_media_type",
            raw=text,
            headers={"Content-Type": "text/plain"},
        ),
        Bad(
            "form encoded",
            415,
            "unsupported_media_type",
            raw=b"userId=u1&amount=1",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        Bad(
            "no content type", 415, "unsupported_media_type", raw=text, headers={"Content-Type": ""}
        ),
    ]


@dataclass
class Endpoint:
    path: str
    base: dict[str, Any]
    cases: list[Bad]


async def _streamed(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 8192):
        yield data[start : start + 8192]


async def test_bad_input_is_refused_and_changes_nothing(api: Api) -> None:
    await wallet(api, "u1", 1000)
    await wallet(api, "u2")
    debit = ok(await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 100}))
    ok(await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 50}))  # spent > the debit
    hold_id = ok(await post(api, "/api/tokens/holds", {"userId": "u1", "amount": 100}))["holdId"]
    spent_hold = ok(await post(api, "/api/tokens/holds", {"userId": "u1", "amount": 10}))["holdId"]
    # First uses of the keys that the conflict cases reuse with a different request.
    ok(await post(api, "/api/tokens/deduct", {"userId": "u1", "amount": 1, "referenceId": "d"}))
    ok(await post(api, "/api/tokens/credit", {"userId": "u1", "amount": 1, "referenceId": "c"}))
    ok(await post(api, "/api/tokens/refund", {"userId": "u1", "amount": 1, "referenceId": "r"}))
    ok(await post(api, "/api/tokens/holds", {"userId": "u1", "amount": 1, "referenceId": "h"}))
    ok(
        await post(
            api, f"/api/tokens/holds/{spent_hold}/capture", {"amount": 1, "referenceId": "k"}
        )
    )

    deduct = {"userId": "u1", "amount": 5}
    refund = {"userId": "u1", "amount": 5}
    credit = {"userId": "u1", "amount": 5}
    hold = {"userId": "u1", "amount": 5}
    capture = {"amount": 5}
    user = {"userId": "brand-new"}
    endpoints = [
        Endpoint(
            "/api/tokens/deduct",
            deduct,
            _envelope_cases(deduct)
            + _user_cases(deduct)
            + _amount_cases(deduct)
            + _text_cases(deduct)
            + [
                Bad("insufficient", 402, "insufficient_tokens", {**deduct, "amount": 10**6}),
                Bad("unknown user", 404, "wallet_not_found", {**deduct, "userId": "nobody"}),
                Bad(
                    "operationType pattern",
                    422,
                    "invalid_request",
                    {**deduct, "operationType": "A B"},
                ),
                Bad(
                    "operationType reserved",
                    400,
                    "invalid_input",
                    {**deduct, "operationType": "bonus"},
                ),
                Bad(
                    "operationType clawback",
                    400,
                    "invalid_input",
                    {**deduct, "operationType": "clawback"},
                ),
                Bad(
                    "operationType unknown",
                    400,
                    "invalid_input",
                    {**deduct, "operationType": "nope"},
                ),
                Bad(
                    "replayed key, other body",
                    409,
                    "idempotency_conflict",
                    {**deduct, "referenceId": "d"},
                ),
                Bad(
                    "replayed header, other body",
                    409,
                    "idempotency_conflict",
                    deduct,
                    headers={"Idempotency-Key": "d"},
                ),
            ],
        ),
        Endpoint(
            "/api/tokens/refund",
            refund,
            _envelope_cases(refund)
            + _user_cases(refund)
            + _amount_cases(refund)
            + _text_cases(refund)
            + [
                Bad("beyond spent", 409, "refund_exceeds_spent", {**refund, "amount": 10**6}),
                Bad("unknown user", 404, "wallet_not_found", {**refund, "userId": "nobody"}),
                Bad(
                    "ledgerEntryId string", 422, "invalid_request", {**refund, "ledgerEntryId": "1"}
                ),
                Bad(
                    "ledgerEntryId float", 422, "invalid_request", {**refund, "ledgerEntryId": 1.0}
                ),
                Bad(
                    "ledgerEntryId unknown", 404, "debit_not_found", {**refund, "ledgerEntryId": -1}
                ),
                Bad(
                    "ledgerEntryId huge", 404, "debit_not_found", {**refund, "ledgerEntryId": 2**70}
                ),
                Bad("refundOf malformed", 400, "invalid_input", {**refund, "refundOf": "deduct-1"}),
                Bad(
                    "refund beyond the debit",
                    409,
                    "refund_exceeds_debit",
                    {**refund, "amount": 101, "ledgerEntryId": debit["ledgerEntryId"]},
                ),
                Bad(
                    "other user's debit",
                    404,
                    "debit_not_found",
                    {**refund, "userId": "u2", "ledgerEntryId": debit["ledgerEntryId"]},
                ),
                Bad(
                    "replayed key, other body",
                    409,
                    "idempotency_conflict",
                    {**refund, "referenceId": "r"},
                ),
            ],
        ),
        Endpoint(
            "/api/tokens/credit",
            credit,
            _envelope_cases(credit)
            + _user_cases(credit)
            + _amount_cases(credit)
            + _text_cases(credit)
            + [
                Bad("unknown user", 404, "wallet_not_found", {**credit, "userId": "nobody"}),
                Bad(
                    "operationType usage",
                    422,
                    "invalid_request",
                    {**credit, "operationType": "usage"},
                ),
                Bad(
                    "operationType null", 422, "invalid_request", {**credit, "operationType": None}
                ),
                Bad(
                    "replayed key, other body",
                    409,
                    "idempotency_conflict",
                    {**credit, "referenceId": "c"},
                ),
            ],
        ),
        Endpoint(
            "/api/tokens/holds",
            hold,
            _envelope_cases(hold)
            + _user_cases(hold)
            + _amount_cases(hold)
            + _text_cases(hold)
            + [
                Bad("insufficient", 402, "insufficient_tokens", {**hold, "amount": 10**6}),
                Bad("unknown user", 404, "wallet_not_found", {**hold, "userId": "nobody"}),
                Bad("ttlSeconds 0", 422, "invalid_request", {**hold, "ttlSeconds": 0}),
                Bad(
                    "ttlSeconds > 7 days",
                    422,
                    "invalid_request",
                    {**hold, "ttlSeconds": MAX_HOLD_TTL_SECONDS + 1},
                ),
                Bad("ttlSeconds 1.5", 422, "invalid_request", {**hold, "ttlSeconds": 1.5}),
                Bad("ttlSeconds '60'", 422, "invalid_request", {**hold, "ttlSeconds": "60"}),
                Bad(
                    "operationType reserved",
                    400,
                    "invalid_input",
                    {**hold, "operationType": "refund"},
                ),
                Bad(
                    "operationType unknown", 400, "invalid_input", {**hold, "operationType": "nope"}
                ),
                Bad(
                    "replayed key, other body",
                    409,
                    "idempotency_conflict",
                    {**hold, "referenceId": "h"},
                ),
            ],
        ),
        Endpoint(
            f"/api/tokens/holds/{hold_id}/capture",
            capture,
            _envelope_cases(capture)
            + _amount_cases(capture, zero_ok=True)
            + _text_cases(capture)
            + [
                Bad(
                    "userId is not a capture field",
                    422,
                    "invalid_request",
                    {**capture, "userId": "u1"},
                ),
                Bad(
                    "unknown hold",
                    404,
                    "hold_not_found",
                    capture,
                    path=f"/api/tokens/holds/{UNKNOWN_HOLD}/capture",
                ),
                Bad(
                    "malformed hold id",
                    404,
                    "hold_not_found",
                    capture,
                    path="/api/tokens/holds/h1/capture",
                ),
                Bad(
                    "captured hold",
                    409,
                    "hold_not_pending",
                    capture,
                    path=f"/api/tokens/holds/{spent_hold}/capture",
                ),
                Bad(
                    "replayed key, other hold",
                    409,
                    "idempotency_conflict",
                    {**capture, "amount": 1, "referenceId": "k"},
                ),
            ],
        ),
        Endpoint(
            f"/api/tokens/holds/{hold_id}/void",
            {},
            [
                Bad("unknown field", 422, "invalid_request", {"amount": 1}),
                Bad("JSON array", 422, "invalid_request", []),
                Bad("malformed JSON", 422, "invalid_request", raw=b"{"),
                Bad(
                    "text/plain",
                    415,
                    "unsupported_media_type",
                    raw=b"{}",
                    headers={"Content-Type": "text/plain"},
                ),
                Bad("body > 64 KiB", 413, "payload_too_large", {"x": "x" * 70_000}),
                Bad(
                    "unknown hold",
                    404,
                    "hold_not_found",
                    path=f"/api/tokens/holds/{UNKNOWN_HOLD}/void",
                    empty=True,
                ),
                Bad(
                    "captured hold",
                    409,
                    "hold_not_pending",
                    path=f"/api/tokens/holds/{spent_hold}/void",
                    empty=True,
                ),
            ],
        ),
        Endpoint(
            "/api/users",
            user,
            _envelope_cases(user) + _user_cases(user),
        ),
    ]

    books = await Books(("u1", "u2", "brand-new"), (hold_id, spent_hold)).take(api)
    rows = await raw_books(api)
    count = 0
    for endpoint in endpoints:
        for case in endpoint.cases:
            path = case.path or endpoint.path
            headers = {**api.headers(), **case.headers}
            label = f"{path} {case.name}"
            if case.raw is not None:
                headers.setdefault("Content-Type", "application/json")
                if headers["Content-Type"] == "":
                    del headers["Content-Type"]
                response = await api.client.post(path, content=case.raw, headers=headers)
            elif case.empty:
                response = await api.client.post(path, headers=headers)
            else:
                response = await api.client.post(path, json=case.body, headers=headers)
            assert response.status_code == case.status, f"{label}: {response.text}"
            body = response.json()
            assert isinstance(body, dict), label
            assert isinstance(body.get("error"), str), f"{label}: {body}"
            assert body["error"], label
            if case.code is not None:
                assert body.get("code") == case.code, f"{label}: {body}"
            if case.status == 402:
                assert body["buyTokensUrl"] == PUBLIC_URL + "/tokens", label
            assert await raw_books(api) == rows, f"the books changed: {label}"
            count += 1
        await books.assert_unchanged(api, endpoint.path)
    assert count > 250

    # A body over the limit without a Content-Length (chunked) is refused too.
    oversized = json.dumps({**deduct, "description": "x" * 70_000}).encode()
    streamed = await api.client.post(
        "/api/tokens/deduct",
        content=_streamed(oversized),
        headers={**api.headers(), "Content-Type": "application/json"},
    )
    refused(
        streamed,
        413,
        {"error": "Request body larger than 65536 bytes", "code": "payload_too_large"},
    )
    await books.assert_unchanged(api, "streamed oversized body")
