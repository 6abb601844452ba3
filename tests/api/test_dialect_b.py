"""Token Process dialect: every status and error body of start and end.

Each test runs on SQLite and PostgreSQL through the ASGI app.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from tests.api.conftest import Api
from tokenbank.db.engine import read_transaction
from tokenbank.ledger.repository.tables import transactions

START = "/api/token-process/start"
END = "/api/token-process/end"
SEED_RULE = {"type": "output_ratio", "ratio": 4}


# --- factories -----------------------------------------------------------------------------


async def make_feature(
    api: Api,
    feature_id: str = "chat",
    *,
    rule: dict[str, Any] | None = None,
    min_balance_tokens: int = 0,
    hold_tokens: int | None = None,
    profit_percent: str | None = None,
    plans: tuple[str, ...] = ("basic",),
) -> None:
    await api.services.plans.create_feature(
        feature_id,
        name=f"Feature {feature_id}",
        rule=rule or SEED_RULE,
        min_balance_tokens=min_balance_tokens,
        hold_tokens=hold_tokens,
        profit_percent=profit_percent,
    )
    for plan in plans:
        await ensure_plan(api, plan)
        await api.services.plans.add_feature_to_plan(plan, feature_id)


async def ensure_plan(api: Api, name: str, *, profit_percent: str = "0") -> None:
    existing = {plan.name for plan in await api.services.plans.list_plans()}
    if name not in existing:
        await api.services.plans.create_plan(name, profit_percent=profit_percent)


async def make_user(
    api: Api, user_id: str = "u1", *, tokens: int = 0, plan: str | None = "basic"
) -> None:
    await api.tokens.open_wallet(user_id)
    if tokens:
        await api.tokens.credit(user_id, amount=tokens, operation_type="admin_grant")
    if plan is not None:
        await ensure_plan(api, plan)
        await api.services.plans.set_user_plan(user_id, plan)


def key(api: Api, scope: str = "spend") -> dict[str, str]:
    return api.headers(scope, style="server")


async def start(api: Api, **body: Any) -> Any:
    body.setdefault("user_id", "u1")
    body.setdefault("feature_endpoint_id", "chat")
    return await api.client.post(START, json=body, headers=key(api))


async def end(api: Api, headers: dict[str, str] | None = None, **body: Any) -> Any:
    body.setdefault("user_id", "u1")
    body.setdefault("feature_endpoint_id", "chat")
    body.setdefault("input_token", 10)
    body.setdefault("output_token", 40)
    return await api.client.post(END, json=body, headers={**key(api), **(headers or {})})


async def balance(api: Api, user_id: str = "u1") -> tuple[int, int, str]:
    info = await api.tokens.get_balance(user_id)
    assert info is not None
    return info.tokens_balance, info.held, info.status


async def usage_entries(api: Api, user_id: str = "u1") -> list[int]:
    entries = await api.tokens.get_ledger().get_user_entries(user_id, operation_type="usage")
    return [entry.tokens_amount for entry in entries]


async def pricing_of(api: Api, transaction_id: str) -> dict[str, Any]:
    async with read_transaction(await api.tokens.engine()) as conn:
        statement = select(transactions.c.pricing).where(transactions.c.id == transaction_id)
        pricing: dict[str, Any] = (await conn.execute(statement)).scalar_one()
    return pricing


def error(status: int, message: str) -> dict[str, Any]:
    return {"success": False, "status": status, "message": message}


def core(body: dict[str, Any]) -> dict[str, Any]:
    """the Token Process dialect's error fields (the body may carry a machine-readable code too)."""
    return {name: body[name] for name in ("success", "status", "message")}


# --- authentication and scope --------------------------------------------------------------


async def test_auth_401_on_both_headers_and_403_without_the_spend_scope(api: Api) -> None:
    body = {"user_id": "u1", "feature_endpoint_id": "chat", "input_token": 1, "output_token": 1}
    for path in (START, END):
        missing = await api.client.post(path, json=body)
        assert missing.status_code == 401
        assert core(missing.json()) == error(401, "Missing server API key")
        for headers in (
            {"x-server-api-key": "tb_wrong"},
            {"Authorization": "Bearer tb_wrong"},
        ):
            wrong = await api.client.post(path, json=body, headers=headers)
            assert wrong.status_code == 401
            assert core(wrong.json()) == error(401, "Invalid server API key")

    await make_user(api, tokens=100)
    await make_feature(api)
    for path in (START, END):
        body = {"user_id": "u1", "feature_endpoint_id": "chat", "input_token": 0, "output_token": 0}
        response = await api.client.post(path, json=body, headers=key(api, "read"))
        assert response.status_code == 403
        assert response.json()["success"] is False
        assert response.json()["message"] == "API key lacks the 'spend' scope"
    bearer = await api.client.post(
        START, json={"user_id": "u1", "feature_endpoint_id": "chat"}, headers=api.headers("spend")
    )
    assert bearer.status_code == 200


# --- start -----------------------------------------------------------------------------------


async def test_start_refusals_wallet_404_feature_404_not_in_plan_403(api: Api) -> None:
    await make_feature(api, "in-plan")
    response = await start(api, user_id="nobody")
    assert (response.status_code, response.json()) == (404, error(404, "User wallet not found"))

    await make_user(api, tokens=100)
    for status in ("suspended", "closed"):
        await api.tokens.set_wallet_status("u1", status)
        response = await start(api)
        assert (response.status_code, response.json()) == (
            404,
            error(404, "User wallet not found"),
        )

    await api.tokens.set_wallet_status("u1", "active")
    await make_feature(api, "other", plans=("pro",))
    response = await start(api, feature_endpoint_id="no-such-feature")
    assert (response.status_code, response.json()) == (
        404,
        error(404, "Feature endpoint not found"),
    )

    response = await start(api, feature_endpoint_id="other")
    assert (response.status_code, response.json()) == (
        403,
        error(403, "Feature endpoint is not available in your package"),
    )
    # A user on no plan has no features.
    await make_user(api, "planless", tokens=100, plan=None)
    response = await start(api, user_id="planless", feature_endpoint_id="in-plan")
    assert response.status_code == 403

    # End: the same 404s (access was decided at start; usage is recorded even for a
    # suspended wallet, see the overdraft test).
    response = await end(api, user_id="nobody", feature_endpoint_id="in-plan")
    assert (response.status_code, response.json()) == (404, error(404, "User wallet not found"))
    response = await end(api, feature_endpoint_id="no-such-feature")
    assert (response.status_code, response.json()) == (
        404,
        error(404, "Feature endpoint not found"),
    )


async def test_start_is_access_able_exactly_when_available_covers_the_minimum(api: Api) -> None:
    await make_user(api, tokens=100)
    await make_feature(api, min_balance_tokens=100)
    response = await start(api)
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "message": "Token process started",
        "data": {"user_id": "u1", "token": 100, "available": 100, "status": "access-able"},
    }
    # Held tokens are not available: 99 available is below the minimum.
    await api.tokens.hold("u1", 1)
    response = await start(api)
    assert response.json()["success"] is True
    assert response.json()["data"] == {
        "user_id": "u1",
        "token": 100,
        "available": 99,
        "status": "not-access-able",
    }
    assert (await balance(api)) == (100, 1, "active")  # plain mode reserves nothing


# --- hold mode -------------------------------------------------------------------------------


async def test_concurrent_starts_in_hold_mode_pass_exactly_as_often_as_holds_fit(
    api: Api,
) -> None:
    await make_user(api, tokens=500)
    await make_feature(api, hold_tokens=100)
    responses = await asyncio.gather(*(start(api, request_id=f"start-{n}") for n in range(20)))
    assert all(r.status_code == 200 for r in responses)
    statuses = [r.json()["data"]["status"] for r in responses]
    assert statuses.count("access-able") == 5
    assert statuses.count("not-access-able") == 15
    hold_ids = {r.json()["data"]["hold_id"] for r in responses if "hold_id" in r.json()["data"]}
    assert len(hold_ids) == 5
    assert (await balance(api)) == (500, 500, "active")
    assert (await api.tokens.audit()).ok


async def test_hold_start_is_idempotent_on_request_id_and_asks_per_request(api: Api) -> None:
    await make_user(api, tokens=300)
    await make_feature(api)  # no hold_tokens: plain unless the request asks
    first = await start(api, request_id="r1", hold_tokens=120)
    again = await start(api, request_id="r1", hold_tokens=120)
    assert first.json()["data"]["status"] == again.json()["data"]["status"] == "access-able"
    assert first.json()["data"]["hold_id"] == again.json()["data"]["hold_id"]
    assert first.json()["data"]["available"] == 180
    assert (await balance(api)) == (300, 120, "active")

    conflict = await start(api, request_id="r1", hold_tokens=121)
    assert conflict.status_code == 409
    assert conflict.json()["success"] is False

    too_big = await start(api, hold=True, hold_tokens=181)
    assert too_big.json()["data"]["status"] == "not-access-able"
    assert "hold_id" not in too_big.json()["data"]
    assert (await balance(api)) == (300, 120, "active")

    no_amount = await start(api, hold=True)
    assert no_amount.status_code == 400
    assert no_amount.json()["message"].startswith("hold_tokens:")


async def test_end_with_hold_id_captures_the_cost_and_releases_the_rest(api: Api) -> None:
    await make_user(api, tokens=1_000)
    await make_feature(api, hold_tokens=200)
    started = (await start(api)).json()["data"]
    assert started["available"] == 800
    response = await end(api, hold_id=started["hold_id"], output_token=400)  # 100 tokens
    data = response.json()["data"]
    assert (data["cost"], data["token"], data["status"]) == (100, 900, "return-able")
    assert data["hold_id"] == started["hold_id"]
    assert (await balance(api)) == (900, 0, "active")
    hold = await api.tokens.get_hold(started["hold_id"])
    assert hold is not None and (hold.status, hold.captured_tokens) == ("captured", 100)

    # A retried end never charges twice; a different usage for the hold is refused.
    retry = await end(api, hold_id=started["hold_id"], output_token=400)
    assert retry.json()["data"]["cost"] == 100 and retry.json()["data"]["token"] == 900
    other = await end(api, hold_id=started["hold_id"], output_token=4)
    assert other.status_code == 409
    assert await usage_entries(api) == [-100]

    # Another user's hold is not found.
    await make_user(api, "u2", tokens=100)
    response = await end(api, user_id="u2", hold_id=started["hold_id"])
    assert (response.status_code, response.json()) == (404, error(404, "Hold not found"))


async def test_end_with_the_starts_request_id_captures_its_hold(api: Api) -> None:
    await make_user(api, tokens=1_000)
    await make_feature(api, hold_tokens=50)
    await start(api, request_id="job-1")
    assert (await balance(api)) == (1_000, 50, "active")
    # Usage above the hold is recorded in full.
    response = await end(api, request_id="job-1", output_token=800)
    assert response.json()["data"]["cost"] == 200
    assert (await balance(api)) == (800, 0, "active")
    retry = await end(api, request_id="job-1", output_token=800)
    assert retry.json()["data"]["token"] == 800
    assert await usage_entries(api) == [-200]


async def test_end_after_the_hold_expired_still_records_the_usage_once(api: Api) -> None:
    await make_user(api, tokens=1_000)
    await make_feature(api, hold_tokens=50)
    hold_id = (await start(api)).json()["data"]["hold_id"]
    api.clock.advance(24 * 3600)
    first = await end(api, hold_id=hold_id, output_token=40)
    again = await end(api, hold_id=hold_id, output_token=40)
    assert first.json()["data"]["cost"] == again.json()["data"]["cost"] == 10
    assert await usage_entries(api) == [-10]
    assert (await balance(api)) == (990, 0, "active")


async def test_zero_usage_charges_nothing_and_voids_the_hold(api: Api) -> None:
    await make_user(api, tokens=100)
    await make_feature(api, rule={"type": "fixed", "tokens": 30}, hold_tokens=60)
    hold_id = (await start(api)).json()["data"]["hold_id"]
    response = await end(api, hold_id=hold_id, input_token=0, output_token=0)
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "message": "No tokens used: nothing charged",
        "data": {
            "user_id": "u1",
            "token": 100,
            "cost": 0,
            "status": "return-able",
            "exact_cost": "0",
            "hold_id": hold_id,
        },
    }
    assert (await balance(api)) == (100, 0, "active")
    assert await usage_entries(api) == []


# --- end: pricing ----------------------------------------------------------------------------


async def test_end_prices_the_seed_rule_with_the_plans_profit(api: Api) -> None:
    await ensure_plan(api, "basic", profit_percent="20")
    await make_user(api, tokens=1_000)
    await make_feature(api)
    response = await end(api, input_token=10, output_token=40)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    # the Token Process dialect: base = 40 / 4 = 10; final = 10 + 10 * 20 / 100 = 12.
    assert {k: data[k] for k in ("user_id", "token", "cost", "status", "exact_cost")} == {
        "user_id": "u1",
        "token": 988,
        "cost": 12,
        "status": "return-able",
        "exact_cost": "12",
    }
    pricing = await pricing_of(api, data["transaction_id"])
    assert pricing["rule"] == {"type": "output_ratio", "ratio": "4"}
    assert pricing["pricing_version"] == 1
    assert (pricing["base_cost"], pricing["profit_percent"], pricing["profit_source"]) == (
        "10",
        "20",
        "plan",
    )
    assert pricing["exact_cost"] == "12" and pricing["cost_tokens"] == 12
    assert pricing["rounding"].startswith("ceiling")


async def test_end_prices_every_rule_by_model_and_profit(api: Api) -> None:
    await ensure_plan(api, "basic", profit_percent="10")
    await make_user(api, tokens=1_000_000)
    await make_feature(api, "fixed", rule={"type": "fixed", "tokens": 7})
    await make_feature(api, "ratio3", rule={"type": "output_ratio", "ratio": "3"})
    await make_feature(api, "llm", rule={"type": "per_unit"}, profit_percent="0")
    await make_feature(api, "img", rule={"type": "image"}, profit_percent="0")
    await api.services.pricing.set_model_rate(
        "gpt-x", input_tokens_per_unit="0.5", output_tokens_per_unit="2"
    )
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        # fixed 7, plan profit 10%: 7.7 -> 8
        ({"feature_endpoint_id": "fixed"}, 8, "7.7"),
        # 10 / 3 = 3.33..., * 1.1 = 3.66... -> 4
        ({"feature_endpoint_id": "ratio3", "output_token": 10}, 4, None),
        # default rate 1/1 * 1.5 (billing defaults, docs/compatibility.md): (10 + 40) * 1.5 = 75
        ({"feature_endpoint_id": "llm"}, 75, "75"),
        # gpt-x: (10 * 0.5 + 40 * 2) * 1.5 = 127.5 -> 128
        ({"feature_endpoint_id": "llm", "model": "gpt-x"}, 128, "127.5"),
        # the billing defaults' image costs; unknown models cost the default 6,000
        ({"feature_endpoint_id": "img", "model": "dall-e-3"}, 6_000, "6000"),
        ({"feature_endpoint_id": "img", "model": "DALL-E-2"}, 3_000, "3000"),
        ({"feature_endpoint_id": "img", "model": "google"}, 4_500, "4500"),
        ({"feature_endpoint_id": "img", "model": "somebody-else"}, 6_000, "6000"),
    ]
    for body, cost, exact in cases:
        response = await end(api, **body)
        assert response.status_code == 200, response.json()
        assert response.json()["data"]["cost"] == cost, body
        if exact is not None:
            assert response.json()["data"]["exact_cost"] == exact, body

    # The feature's profit overrides the plan's; changing it bumps the version.
    await api.services.plans.update_feature("fixed", profit_percent="50")
    response = await end(api, feature_endpoint_id="fixed")
    assert response.json()["data"]["cost"] == 11  # 7 * 1.5 = 10.5 -> 11
    pricing = await pricing_of(api, response.json()["data"]["transaction_id"])
    assert (pricing["profit_source"], pricing["pricing_version"]) == ("feature", 2)


# --- end: overdraft, retries -----------------------------------------------------------------


async def test_end_past_zero_is_recorded_in_full_and_suspends_the_wallet(api: Api) -> None:
    await make_user(api, tokens=10)
    await make_feature(api)
    response = await end(api, output_token=100)  # 25 tokens
    data = response.json()["data"]
    assert (data["cost"], data["token"], data["status"]) == (25, -15, "not-return-able")
    assert response.json()["message"].startswith("Usage recorded; the wallet is overdrawn")
    assert (await balance(api)) == (-15, 0, "suspended")
    # Suspended: start refuses; end still records usage that happened.
    assert (await start(api)).status_code == 404
    again = await end(api, output_token=4)
    assert again.json()["data"]["token"] == -16
    assert again.json()["data"]["status"] == "not-return-able"
    # A top-up that covers the overdraft reactivates the wallet.
    await api.tokens.credit("u1", amount=100, operation_type="purchase")
    assert (await start(api)).json()["data"]["status"] == "access-able"
    assert (await api.tokens.audit()).ok


async def test_a_retried_end_with_request_id_charges_once(api: Api) -> None:
    await make_user(api, tokens=1_000)
    await make_feature(api)
    first = await end(api, request_id="call-1")
    retry = await end(api, request_id="call-1")
    assert first.json()["data"]["cost"] == retry.json()["data"]["cost"] == 10
    assert first.json()["data"]["token"] == retry.json()["data"]["token"] == 990
    by_header = await end(api, headers={"Idempotency-Key": "call-2"})
    by_header_again = await end(api, headers={"Idempotency-Key": "call-2"})
    assert by_header.json()["data"]["token"] == by_header_again.json()["data"]["token"] == 980
    assert await usage_entries(api) == [-10, -10]

    # The same id with different usage is a conflict; prices changing between a
    # request and its retry is not.
    conflict = await end(api, request_id="call-1", output_token=41)
    assert conflict.status_code == 409
    assert conflict.json()["success"] is False
    await api.services.plans.update_feature("chat", profit_percent="100")
    assert (await end(api, request_id="call-1")).json()["data"]["cost"] == 10
    # Concurrent duplicates charge once too.
    duplicates = await asyncio.gather(*(end(api, request_id="call-3") for _ in range(5)))
    assert {r.json()["data"]["token"] for r in duplicates} == {960}
    assert await usage_entries(api) == [-20, -10, -10]


# --- bad input -------------------------------------------------------------------------------


async def test_bad_input_gets_a_dialect_b_error_and_changes_nothing(api: Api) -> None:
    await make_user(api, tokens=100)
    await make_feature(api)
    good = {"user_id": "u1", "feature_endpoint_id": "chat", "input_token": 1, "output_token": 4}
    cases: list[tuple[str, Any, int]] = [
        (END, {**good, "input_token": -1}, 422),
        (END, {**good, "output_token": 1.5}, 422),
        (END, {**good, "output_token": "4"}, 422),
        (END, {**good, "output_token": True}, 422),
        (END, {**good, "output_token": 10**13}, 422),
        (END, {k: v for k, v in good.items() if k != "output_token"}, 422),
        (END, {**good, "surprise": 1}, 422),
        (END, {**good, "user_id": ""}, 422),
        (END, {**good, "user_id": "x" * 129}, 422),
        (END, {**good, "model": "m" * 129}, 422),
        (END, {**good, "hold_id": "hold_nope"}, 400),
        (END, {**good, "request_id": ""}, 422),
        (END, {**good, "feature_endpoint_id": "has space"}, 400),
        (END, [good], 422),
        (START, {"user_id": "u1"}, 422),
        (START, {"user_id": "u1", "feature_endpoint_id": "chat", "hold_tokens": 0}, 422),
        (START, {"user_id": "u1", "feature_endpoint_id": "chat", "hold": "yes"}, 422),
        (
            START,
            {"user_id": "u1", "feature_endpoint_id": "chat", "hold": False, "hold_tokens": 5},
            400,
        ),
    ]
    for path, body, status in cases:
        response = await api.client.post(path, json=body, headers=key(api))
        assert response.status_code == status, (body, response.json())
        payload = response.json()
        assert payload["success"] is False and payload["status"] == status, payload
        assert isinstance(payload["message"], str) and payload["message"], payload
    not_json = await api.client.post(
        END, content=b"user_id=u1", headers={**key(api), "Content-Type": "text/plain"}
    )
    assert not_json.status_code == 415 and not_json.json()["success"] is False
    assert (await balance(api)) == (100, 0, "active")
    assert await usage_entries(api) == []
    assert (await api.tokens.audit()).ok
