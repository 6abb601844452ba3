"""Payments over HTTP: packs, buying, purchases and the webhook; bad input is a clear
4xx that writes nothing; secrets never appear in an answer (both engines)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import stripe

from tests.api.conftest import Api
from tests.payments.support import (
    PUBLISHABLE_KEY,
    SECRET_KEY,
    WEBHOOK_SECRET,
    event,
    pay_intent,
    signed,
)
from tests.security.conftest import table_rows


async def purchases(api: Api) -> list[dict[str, Any]]:
    answer = await api.client.get("/api/payments/purchases", headers=api.headers("payments"))
    assert answer.status_code == 200
    found: list[dict[str, Any]] = answer.json()["data"]
    return found


async def test_the_packs_on_sale_with_their_price_per_usd(api: Api) -> None:
    answer = await api.client.get("/api/packs", headers=api.headers("read"))
    assert answer.status_code == 200
    packs = answer.json()["data"]
    assert [p["packId"] for p in packs] == ["starter", "pro", "business", "enterprise"]
    pro = packs[1]
    assert (pro["tokens"], pro["priceCents"], pro["price"], pro["popular"]) == (
        750_000,
        6_500,
        "65.00",
        True,
    )
    assert pro["tokensPerUsd"] == 11_538
    assert (await api.client.get("/api/packs")).status_code == 401


async def test_an_in_page_purchase_end_to_end_over_http(
    api: Api, stripe_client: stripe.StripeClient
) -> None:
    body = {"userId": "alice", "packId": "starter"}
    answer = await api.client.post(
        "/api/payments/intents", json=body, headers=api.headers("payments")
    )
    assert answer.status_code == 200, answer.text
    created = answer.json()["data"]
    assert created["publishableKey"] == PUBLISHABLE_KEY
    assert created["clientSecret"].startswith(created["paymentIntentId"])
    intent = pay_intent(stripe_client, created["paymentIntentId"])
    payload, header = signed(event("payment_intent.succeeded", intent))
    hook = await api.client.post(
        "/api/stripe/webhook",
        content=payload,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )
    assert hook.status_code == 200
    assert hook.json()["outcome"] == "applied"
    balance = await api.tokens.get_balance("alice")
    assert balance is not None and balance.paid_tokens == 150_000
    (purchase,) = await purchases(api)
    assert (purchase["purchaseId"], purchase["status"]) == (created["purchaseId"], "paid")
    assert purchase["paymentIntentId"] == created["paymentIntentId"]
    assert SECRET_KEY not in answer.text + hook.text


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"userId": "alice", "packId": "nope"}, 404, "pack_not_found"),
        ({"userId": "alice", "amountCents": 499}, 400, None),
        ({"userId": "alice", "packId": "starter", "amountCents": 500}, 400, None),
        ({"userId": "alice"}, 400, None),
        ({"userId": "nobody", "packId": "starter"}, 404, "user_not_found"),
        ({"userId": "alice", "packId": "starter", "extra": 1}, 422, "invalid_request"),
        ({"userId": "alice", "amountCents": "500"}, 422, "invalid_request"),
    ],
)
async def test_bad_purchases_are_refused_and_write_nothing(
    api: Api, body: dict[str, Any], status: int, code: str | None
) -> None:
    answer = await api.client.post(
        "/api/payments/intents", json=body, headers=api.headers("payments")
    )
    assert answer.status_code == status, answer.text
    if code is not None:
        assert answer.json()["code"] == code
    assert await purchases(api) == []


async def test_buying_needs_the_payments_scope(api: Api) -> None:
    body = {"userId": "alice", "packId": "starter"}
    for scope in ("read", "spend", "admin"):
        answer = await api.client.post(
            "/api/payments/intents", json=body, headers=api.headers(scope)
        )
        assert answer.status_code == 403
    assert await purchases(api) == []


async def test_a_webhook_with_a_bad_signature_is_a_400_that_writes_nothing(api: Api) -> None:
    payload, _ = signed(event("payment_intent.succeeded", {"id": "pi_x"}))
    for header in ({"Stripe-Signature": "t=1,v1=00"}, {}):
        answer = await api.client.post(
            "/api/stripe/webhook",
            content=payload,
            headers={**header, "Content-Type": "application/json"},
        )
        assert answer.status_code == 400
        assert answer.json()["code"] == "invalid_webhook"
    assert await purchases(api) == []


async def test_admins_create_edit_and_take_packs_off_sale(api: Api) -> None:
    admin = api.headers("admin")
    new = {"packId": "mini", "name": "Mini", "tokens": 60_000, "priceCents": 500}
    created = await api.client.post("/api/admin/packs", json=new, headers=admin)
    assert created.status_code == 201, created.text
    again = await api.client.post("/api/admin/packs", json=new, headers=admin)
    assert again.status_code == 409
    patched = await api.client.patch(
        "/api/admin/packs/mini", json={"stripePriceId": "price_123", "popular": True}, headers=admin
    )
    assert patched.json()["data"]["stripePriceId"] == "price_123"
    bad = await api.client.patch("/api/admin/packs/mini", json={"priceCents": 0}, headers=admin)
    assert bad.status_code == 422
    assert (await api.client.delete("/api/admin/packs/mini", headers=admin)).status_code == 200
    on_sale = await api.client.get("/api/packs", headers=api.headers("read"))
    assert "mini" not in [p["packId"] for p in on_sale.json()["data"]]
    everything = await api.client.get("/api/admin/packs", headers=admin)
    mini = [p for p in everything.json()["data"] if p["packId"] == "mini"]
    assert mini[0]["active"] is False and mini[0]["priceCents"] == 500
    refused = await api.client.post(
        "/api/payments/intents",
        json={"userId": "alice", "packId": "mini"},
        headers=api.headers("payments"),
    )
    assert refused.status_code == 400


async def test_the_stripe_secrets_are_never_logged_stored_or_answered(
    api: Api, stripe_client: stripe.StripeClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Every logger at DEBUG, the SDK's and httpx's included, over a purchase and its
    # webhook (and a refused one).
    caplog.set_level(logging.DEBUG)
    for name in ("stripe", "httpx", "httpcore", "sqlalchemy.engine", "tokenbank"):
        caplog.set_level(logging.DEBUG, logger=name)
    body = {"userId": "alice", "packId": "pro"}
    answer = await api.client.post(
        "/api/payments/intents", json=body, headers=api.headers("payments")
    )
    intent = pay_intent(stripe_client, answer.json()["data"]["paymentIntentId"])
    payload, header = signed(event("payment_intent.succeeded", intent))
    hooks = [
        await api.client.post(
            "/api/stripe/webhook",
            content=payload,
            headers={"Stripe-Signature": sig, "Content-Type": "application/json"},
        )
        for sig in (header, "t=1,v1=bad")
    ]
    assert [hook.status_code for hook in hooks] == [200, 400]
    rows = await table_rows(await api.tokens.engine())
    logged = [f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records]
    assert any(r.name.startswith("stripe") or r.name.startswith("httpx") for r in caplog.records)
    answers = [answer.text, *(hook.text for hook in hooks), repr(api.services.settings)]
    for secret in (SECRET_KEY, WEBHOOK_SECRET):
        for text in (repr(rows), *logged, *answers):
            assert secret not in text
