"""POST /api/estimate (Token Service dialect): an action, a usage or an amount; no write."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api


async def estimate(api: Api, body: Any, scope: str = "read") -> Any:
    return await api.client.post("/api/estimate", json=body, headers=api.headers(scope))


async def test_estimate_an_action_an_amount_and_a_usage(api: Api) -> None:
    await api.tokens.set_operation_cost("image-1024", 30)
    await api.tokens.open_wallet("u1")
    await api.tokens.credit("u1", amount=50, operation_type="purchase")
    await api.services.plans.create_plan("basic", profit_percent="20")
    await api.services.plans.set_user_plan("u1", "basic")
    await api.services.plans.create_feature(
        "chat", name="Chat", rule={"type": "output_ratio", "ratio": 4}
    )

    response = await estimate(api, {"userId": "u1", "action": "image-1024"})
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "data": {
            "action": "image-1024",
            "cost": 30,
            "exactCost": "30",
            "rule": {"type": "operation_cost", "operation": "image-1024"},
            "currentBalance": 50,
            "available": 50,
            "canAfford": True,
            "remainingAfter": 20,
        }
    }
    # The Token Service dialect named the field "type"; without a user, the balance fields are null.
    anonymous = (await estimate(api, {"type": "image-1024"})).json()["data"]
    assert (anonymous["cost"], anonymous["currentBalance"], anonymous["canAfford"]) == (
        30,
        None,
        None,
    )
    assert anonymous["remainingAfter"] is None

    too_much = (await estimate(api, {"userId": "u1", "amount": 51})).json()["data"]
    assert (too_much["action"], too_much["cost"], too_much["canAfford"]) == ("amount", 51, False)
    assert too_much["remainingAfter"] == 0

    # A usage is priced as /api/token-process/end would charge it: 201 / 4 = 50.25,
    # plus the plan's 20% = 60.3, rounded up once to 61.
    usage = {"userId": "u1", "featureEndpointId": "chat", "inputTokens": 5, "outputTokens": 201}
    data = (await estimate(api, usage)).json()["data"]
    assert {k: data[k] for k in ("action", "cost", "exactCost", "rule", "profitPercent")} == {
        "action": "chat",
        "cost": 61,
        "exactCost": "60.3",
        "rule": {"type": "output_ratio", "ratio": "4"},
        "profitPercent": "20",
    }
    assert (data["canAfford"], data["remainingAfter"], data["pricingVersion"]) == (False, 0, 1)
    # Without a feature: per unit by model, times the multiplier (the billing defaults' 1.5).
    per_unit = (await estimate(api, {"model": "dall-e-3", "inputTokens": 10})).json()["data"]
    assert (per_unit["action"], per_unit["cost"], per_unit["rule"]["type"]) == (
        "usage",
        15,
        "per_unit",
    )

    # A suspended wallet can afford nothing.
    await api.tokens.set_wallet_status("u1", "suspended")
    suspended = (await estimate(api, {"userId": "u1", "amount": 1})).json()["data"]
    assert suspended["canAfford"] is False
    entries = await api.tokens.get_ledger().get_user_entries("u1")
    assert [e.operation_type for e in entries] == ["purchase"]


async def test_estimate_refuses_bad_requests(api: Api) -> None:
    await api.tokens.open_wallet("u1")
    cases: list[tuple[Any, int, str]] = [
        ({}, 422, "exactly one"),
        ({"action": "image-1024", "amount": 5}, 422, "exactly one"),
        ({"amount": 5, "inputTokens": 1}, 422, "exactly one"),
        ({"amount": 0}, 422, "amount"),
        ({"amount": 1.5}, 422, "amount"),
        ({"action": "no-such-action"}, 400, "unknown action"),
        ({"action": "Bad Action"}, 422, "action"),
        ({"userId": "nobody", "amount": 5}, 404, "User wallet not found"),
        ({"featureEndpointId": "nope", "outputTokens": 4}, 404, "Feature endpoint not found"),
        ({"inputTokens": -1}, 422, "inputTokens"),
        ({"amount": 5, "surprise": True}, 422, "surprise"),
    ]
    for body, status, hint in cases:
        response = await estimate(api, body)
        assert response.status_code == status, (body, response.json())
        assert hint.lower() in response.json()["error"].lower(), response.json()
    assert (await estimate(api, {"amount": 5}, scope="spend")).status_code == 403
