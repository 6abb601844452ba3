"""The admin JSON API: plans, features, users, costs, model prices, settings, grants."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api

ADMIN = "/api/admin"


async def call(api: Api, method: str, path: str, body: Any = None, scope: str = "admin") -> Any:
    return await api.client.request(method, ADMIN + path, json=body, headers=api.headers(scope))


async def test_features_and_plans_crud(api: Api) -> None:
    rule = {"type": "output_ratio", "ratio": 4}
    created = await call(
        api,
        "POST",
        "/features",
        {"id": "chat", "name": "Chat", "rule": rule, "minBalanceTokens": 5},
    )
    assert created.status_code == 201, created.json()
    feature = created.json()["data"]
    assert {k: feature[k] for k in ("id", "name", "app", "minBalanceTokens", "holdTokens")} == {
        "id": "chat",
        "name": "Chat",
        "app": None,
        "minBalanceTokens": 5,
        "holdTokens": None,
    }
    assert (feature["rule"], feature["pricingVersion"], feature["profitPercent"]) == (
        {"type": "output_ratio", "ratio": "4"},
        1,
        None,
    )
    # snake_case is accepted too; the owning app is named by slug.
    image = await call(
        api,
        "POST",
        "/features",
        {
            "id": "img",
            "name": "Images",
            "rule": {"type": "image"},
            "hold_tokens": 6000,
            "app": "test-app",
        },
    )
    assert image.status_code == 201 and image.json()["data"]["app"] == "test-app"
    assert (
        await call(api, "POST", "/features", {"id": "chat", "name": "x", "rule": rule})
    ).status_code == 409

    # A new name keeps the version; a new rule or profit bumps it.
    renamed = await call(api, "PATCH", "/features/chat", {"name": "Chat v2"})
    assert renamed.json()["data"]["pricingVersion"] == 1
    repriced = await call(api, "PATCH", "/features/chat", {"rule": {"type": "fixed", "tokens": 3}})
    assert repriced.json()["data"]["pricingVersion"] == 2
    same_rule = await call(api, "PATCH", "/features/chat", {"rule": {"type": "fixed", "tokens": 3}})
    assert same_rule.json()["data"]["pricingVersion"] == 2
    profit = await call(api, "PATCH", "/features/chat", {"profitPercent": "12.5"})
    assert profit.json()["data"]["profitPercent"] == "12.5"
    assert profit.json()["data"]["pricingVersion"] == 3
    cleared = await call(api, "PATCH", "/features/img", {"holdTokens": None, "app": None})
    assert (cleared.json()["data"]["holdTokens"], cleared.json()["data"]["app"]) == (None, None)

    plan = await call(
        api,
        "POST",
        "/plans",
        {
            "name": "pro",
            "monthlyAllocationTokens": 50_000,
            "profitPercent": 20,
            "features": ["chat"],
        },
    )
    assert plan.status_code == 201, plan.json()
    assert {
        k: plan.json()["data"][k]
        for k in ("name", "monthlyAllocationTokens", "profitPercent", "features")
    } == {
        "name": "pro",
        "monthlyAllocationTokens": 50_000,
        "profitPercent": "20",
        "features": ["chat"],
    }
    added = await call(api, "PUT", "/plans/pro/features/img")
    assert added.json()["data"]["features"] == ["chat", "img"]
    assert (await call(api, "PUT", "/plans/pro/features/img")).json()["data"]["features"] == [
        "chat",
        "img",
    ]
    removed = await call(api, "DELETE", "/plans/pro/features/chat")
    assert removed.json()["data"]["features"] == ["img"]
    replaced = await call(api, "PATCH", "/plans/pro", {"features": ["chat"], "description": "Pro"})
    assert (replaced.json()["data"]["features"], replaced.json()["data"]["description"]) == (
        ["chat"],
        "Pro",
    )
    listed = await call(api, "GET", "/plans")
    assert [p["name"] for p in listed.json()["data"]] == ["pro"]
    assert [f["id"] for f in (await call(api, "GET", "/features")).json()["data"]] == [
        "chat",
        "img",
    ]

    # Deleting a feature takes it out of every plan.
    assert (await call(api, "DELETE", "/features/chat")).status_code == 200
    assert (await call(api, "GET", "/plans/pro")).json()["data"]["features"] == []
    assert (await call(api, "DELETE", "/plans/pro")).json() == {
        "data": {"name": "pro", "deleted": True}
    }

    for method, path in (
        ("GET", "/plans/pro"),
        ("PATCH", "/plans/pro"),
        ("DELETE", "/plans/pro"),
        ("GET", "/features/chat"),
        ("DELETE", "/features/chat"),
        ("PUT", "/plans/nope/features/img"),
    ):
        response = await call(api, method, path, {} if method == "PATCH" else None)
        assert response.status_code == 404, (method, path)
        assert "error" in response.json()


async def test_admin_refuses_bad_input_with_a_clear_400_or_422(api: Api) -> None:
    cases: list[tuple[str, str, Any, int, str]] = [
        (
            "POST",
            "/features",
            {"id": "f", "name": "F", "rule": {"type": "output_ratio", "ratio": 0.5}},
            400,
            "float",
        ),
        ("POST", "/features", {"id": "f", "name": "F", "rule": {"type": "bogus"}}, 400, "type"),
        ("POST", "/features", {"id": "f", "name": "F", "rule": {"type": "fixed"}}, 400, "tokens"),
        (
            "POST",
            "/features",
            {"id": "bad id", "name": "F", "rule": {"type": "fixed", "tokens": 1}},
            400,
            "id",
        ),
        (
            "POST",
            "/features",
            {"id": "f", "name": "F", "rule": {"type": "fixed", "tokens": 1}, "app": "no-app"},
            400,
            "app",
        ),
        ("POST", "/features", {"id": "f", "name": "F", "rule": {}, "extra": 1}, 422, "extra"),
        ("POST", "/plans", {"name": "p", "profitPercent": "abc"}, 400, "profit"),
        ("POST", "/plans", {"name": "p", "profitPercent": 1.5}, 422, "profitPercent"),
        ("POST", "/plans", {"name": "p", "features": ["missing"]}, 400, "missing"),
        (
            "POST",
            "/plans",
            {"name": "p", "monthlyAllocationTokens": -1},
            422,
            "monthlyAllocationTokens",
        ),
        (
            "PUT",
            "/models/gpt-x",
            {"inputTokensPerUnit": "-1", "outputTokensPerUnit": "1"},
            400,
            "input",
        ),
        (
            "PUT",
            "/models/gpt-x",
            {"inputTokensPerUnit": 0.1, "outputTokensPerUnit": "1"},
            422,
            "input",
        ),
        ("PATCH", "/settings", {"tokenMultiplier": "0"}, 400, "token_multiplier"),
        ("PATCH", "/settings", {"tokensPerUsd": 0}, 422, "tokensPerUsd"),
        ("PUT", "/costs/purchase", {"tokens": 5}, 400, "reserved"),
        ("PUT", "/costs/clawback", {"tokens": 5}, 400, "reserved"),
        ("PUT", "/users/u1/status", {"status": "frozen"}, 400, "status"),
    ]
    for method, path, body, status, hint in cases:
        response = await call(api, method, path, body)
        assert response.status_code == status, (path, body, response.json())
        assert hint.lower() in response.json()["error"].lower(), response.json()
    assert (await call(api, "GET", "/plans")).json() == {"data": []}
    assert (await call(api, "GET", "/features")).json() == {"data": []}


async def test_user_plan_status_and_grants(api: Api) -> None:
    await api.services.plans.create_plan("basic")
    await api.tokens.open_wallet("u1")

    response = await call(api, "PUT", "/users/u1/plan", {"plan": "basic"})
    assert response.json() == {"data": {"userId": "u1", "plan": "basic"}}
    unknown = await call(api, "PUT", "/users/u1/plan", {"plan": "gold"})
    assert unknown.status_code == 400 and "gold" in unknown.json()["error"]
    missing = await call(api, "PUT", "/users/nobody/plan", {"plan": "basic"})
    assert (missing.status_code, missing.json()["error"]) == (404, "User wallet not found")
    in_use = await call(api, "DELETE", "/plans/basic")
    assert in_use.status_code == 409 and "in use" in in_use.json()["error"]
    assert (await call(api, "PUT", "/users/u1/plan", {"plan": None})).json()["data"]["plan"] is None
    assert (await api.tokens.get_balance("u1")).tier is None  # type: ignore[union-attr]

    suspended = await call(api, "PUT", "/users/u1/status", {"status": "suspended"})
    assert suspended.json()["data"]["status"] == "suspended"
    assert (await call(api, "PUT", "/users/u1/status", {"status": "active"})).status_code == 200
    assert (await call(api, "PUT", "/users/nobody/status", {"status": "active"})).status_code == 404

    grant = {"userId": "u1", "amount": 500, "reason": "beta tester", "referenceId": "g-1"}
    first = await call(api, "POST", "/grants", grant)
    again = await call(api, "POST", "/grants", grant)
    assert first.status_code == 200, first.json()
    assert first.json()["data"]["balance"] == again.json()["data"]["balance"] == 500
    assert again.json()["data"]["replayed"] is True
    entries = await api.tokens.get_ledger().get_user_entries("u1")
    assert [(e.operation_type, e.tokens_amount, e.description) for e in entries] == [
        ("admin_grant", 500, "beta tester")
    ]
    nobody = await call(api, "POST", "/grants", {**grant, "userId": "nobody", "referenceId": "g-2"})
    assert (nobody.status_code, nobody.json()["error"]) == (404, "User wallet not found")
    zero = await call(api, "POST", "/grants", {**grant, "amount": 0})
    assert zero.status_code == 422

    # Every admin endpoint needs the admin scope.
    for method, path in (("GET", "/plans"), ("POST", "/grants"), ("GET", "/settings")):
        response = await call(api, method, path, grant if method == "POST" else None, scope="spend")
        assert response.status_code == 403


async def test_costs_models_and_settings_drive_pricing(api: Api) -> None:
    assert (await call(api, "PUT", "/costs/image_generation", {"tokens": 25})).json() == {
        "data": {"operation": "image_generation", "tokens": 25}
    }
    assert (await call(api, "GET", "/costs/image_generation")).json()["data"]["tokens"] == 25
    costs = (await call(api, "GET", "/costs")).json()["data"]
    assert {"operation": "image_generation", "tokens": 25} in costs
    assert (await call(api, "DELETE", "/costs/image_generation")).status_code == 200
    assert (await call(api, "GET", "/costs/image_generation")).status_code == 404
    assert (await call(api, "DELETE", "/costs/image_generation")).status_code == 404

    models = {m["model"]: m for m in (await call(api, "GET", "/models")).json()["data"]}
    assert {name: models[name]["imageTokens"] for name in ("dall-e-3", "dall-e-2", "google")} == {
        "dall-e-3": 6_000,
        "dall-e-2": 3_000,
        "google": 4_500,
    }
    assert models["default"] == {
        "model": "default",
        "inputTokensPerUnit": "1",
        "outputTokensPerUnit": "1",
        "imageTokens": 6_000,
        "source": "shipped",
    }
    set_rate = await call(
        api,
        "PUT",
        "/models/GPT-X",
        {"inputTokensPerUnit": "0.25", "outputTokensPerUnit": 2, "imageTokens": 100},
    )
    assert set_rate.json()["data"] == {
        "model": "gpt-x",
        "inputTokensPerUnit": "0.25",
        "outputTokensPerUnit": "2",
        "imageTokens": 100,
        "source": "database",
    }
    assert (
        await call(
            api,
            "PUT",
            "/models/models/gemini-pro",
            {"inputTokensPerUnit": 1, "outputTokensPerUnit": 1},
        )
    ).status_code == 200

    assert (await call(api, "GET", "/settings")).json() == {
        "data": {"tokenMultiplier": "1.5", "tokensPerUsd": 10_000}
    }
    estimate = {"featureEndpointId": None, "model": "gpt-x", "inputTokens": 100, "outputTokens": 10}
    priced = await api.client.post("/api/estimate", json=estimate, headers=api.headers("read"))
    assert priced.json()["data"]["cost"] == 68  # (25 + 20) * 1.5 = 67.5 -> 68
    patched = await call(api, "PATCH", "/settings", {"tokenMultiplier": "2", "tokensPerUsd": 5_000})
    assert patched.json() == {"data": {"tokenMultiplier": "2", "tokensPerUsd": 5_000}}
    priced = await api.client.post("/api/estimate", json=estimate, headers=api.headers("read"))
    assert priced.json()["data"]["cost"] == 90

    # Deleting the override brings back the shipped (default) rate.
    assert (await call(api, "DELETE", "/models/gpt-x")).status_code == 200
    assert (await call(api, "DELETE", "/models/gpt-x")).status_code == 404
    priced = await api.client.post("/api/estimate", json=estimate, headers=api.headers("read"))
    assert priced.json()["data"]["cost"] == 220  # (100 + 10) * 2
