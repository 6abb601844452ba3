"""Grants over HTTP: a credit's terms, the grants of a wallet, the balance's breakdown."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.api.conftest import Api
from tests.api.test_dialect_a import WALLET_NOT_FOUND, get, ok, post, raw_books, refused


def iso(api: Api, days: int) -> str:
    return (api.clock() + timedelta(days=days)).isoformat().replace("+00:00", "Z")


async def test_credit_terms_grants_and_the_balance_breakdown(api: Api) -> None:
    await api.tokens.open_wallet("gail")
    bought = {"userId": "gail", "amount": 300, "operationType": "purchase"}
    ok(await post(api, "/api/tokens/credit", bought))
    bonus = {
        "userId": "gail",
        "amount": 100,
        "operationType": "bonus",
        "priority": 10,
        "expiresAt": iso(api, 30),
    }
    ok(await post(api, "/api/tokens/credit", bonus))
    ok(await post(api, "/api/tokens/deduct", {"userId": "gail", "amount": 40}))

    grants = ok(await get(api, "/api/tokens/grants/gail", "read"))
    assert [
        {k: g[k] for k in ("source", "category", "priority", "amount", "remaining", "status")}
        for g in grants
    ] == [
        {
            "source": "bonus",
            "category": "promotional",
            "priority": 10,
            "amount": 100,
            "remaining": 60,
            "status": "active",
        },
        {
            "source": "purchase",
            "category": "paid",
            "priority": 50,
            "amount": 300,
            "remaining": 300,
            "status": "active",
        },
    ]
    assert grants[0]["expiresAt"] == iso(api, 30)
    assert grants[1]["expiresAt"] is None
    balance = ok(await get(api, "/api/tokens/balance/gail", "read"))
    assert (balance["balance"], balance["paid"], balance["promotional"]) == (360, 300, 60)
    assert balance["nextExpiry"] == {"at": iso(api, 30), "amount": 60}
    refused(await get(api, "/api/tokens/grants/nobody", "read"), 404, WALLET_NOT_FOUND)


async def test_bad_credit_terms_are_refused_and_change_nothing(api: Api) -> None:
    await api.tokens.open_wallet("hank")
    before = await raw_books(api)
    bad: list[tuple[dict[str, Any], int]] = [
        ({"category": "gold"}, 422),
        ({"priority": 101}, 422),
        ({"priority": -1}, 422),
        ({"priority": "1"}, 422),
        ({"expiresAt": "2030-01-01T00:00:00"}, 422),  # no timezone
        ({"expiresAt": "soon"}, 422),
        ({"expiresAt": iso(api, -1)}, 400),  # in the past
        ({"effectiveAt": "2030-01-01T00:00:00"}, 422),  # no timezone
        ({"effectiveAt": iso(api, 5), "expiresAt": iso(api, 5)}, 400),  # expires as it starts
        ({"effectiveAt": iso(api, 5), "expiresAt": iso(api, 4)}, 400),
        ({"effectiveAt": iso(api, 40_000)}, 400),  # beyond a century
    ]
    for terms, status in bad:
        body = {"userId": "hank", "amount": 10, **terms}
        refused(await post(api, "/api/tokens/credit", body), status)
        assert await raw_books(api) == before, terms


async def test_a_scheduled_credit_over_http(api: Api) -> None:
    await api.tokens.open_wallet("ivy")
    body = {
        "userId": "ivy",
        "amount": 400,
        "operationType": "bonus",
        "effectiveAt": iso(api, 7),
        "expiresAt": iso(api, 37),
    }
    answer = ok(await post(api, "/api/tokens/credit", body))
    assert (answer["transactionId"], answer["ledgerEntryId"]) == (None, None)
    scheduled = answer["scheduled"]
    assert scheduled["effectiveAt"] == iso(api, 7)
    listed = ok(await get(api, "/api/tokens/grants/ivy", "read"))
    assert {k: listed[0][k] for k in ("grantId", "status", "amount", "remaining")} == {
        "grantId": None,
        "status": "scheduled",
        "amount": 400,
        "remaining": 0,
    }
    assert listed[0]["scheduledCreditId"] == scheduled["scheduledCreditId"]
    balance_before = ok(await get(api, "/api/tokens/balance/ivy", "read"))["balance"]
    api.clock.advance(7 * 86_400)
    spend = {"userId": "ivy", "amount": balance_before + 100}
    assert ok(await post(api, "/api/tokens/deduct", spend))["balance"] == 300
    listed = ok(await get(api, "/api/tokens/grants/ivy", "read"))
    assert listed[0]["status"] == "active" and listed[0]["expiresAt"] == iso(api, 30)
