"""Plans with allocation policies and renewals over the admin API."""

from __future__ import annotations

from tests.api.conftest import Api
from tests.api.test_admin import call
from tests.api.test_dialect_a import ok, refused


async def test_plan_policy_and_renewals_over_http(api: Api) -> None:
    plan = {
        "name": "pro",
        "monthlyAllocationTokens": 2_000,
        "allocationPolicy": "rollover",
        "rolloverCapTokens": 500,
    }
    created = ok(await call(api, "POST", "/plans", plan), 201)
    assert (created["allocationPolicy"], created["rolloverCapTokens"]) == ("rollover", 500)
    changed = ok(await call(api, "PATCH", "/plans/pro", {"rolloverCapTokens": None}))
    assert changed["rolloverCapTokens"] is None
    for user_id in ("ann", "bo"):
        await api.tokens.open_wallet(user_id)
        ok(await call(api, "PUT", f"/users/{user_id}/plan", {"plan": "pro"}))

    due = ok(await call(api, "GET", "/users/ann/renewal"))
    assert (due["eligible"], due["tier"], due["daysUntilRenewal"]) == (True, "pro", 0)
    preview = ok(await call(api, "POST", "/renewals/run", {"dryRun": True}))
    assert (preview["dryRun"], preview["successful"], preview["renewals"][0]["newBalance"]) == (
        True,
        2,
        None,
    )
    done = ok(await call(api, "POST", "/renewals/run", {"limit": 10}))
    assert (done["successful"], done["failed"], done["skipped"]) == (2, 0, 0)
    assert done["renewals"][0]["tokensGranted"] == 2_000
    later = ok(await call(api, "GET", "/users/ann/renewal"))
    assert (later["eligible"], later["reason"]) == (False, "already renewed for this period")
    assert later["daysUntilRenewal"] == 31  # joined 1 January


async def test_bad_renewal_requests_are_refused(api: Api) -> None:
    bad_plans = [
        {"name": "x", "allocationPolicy": "forever"},
        {"name": "x", "rolloverCapTokens": -1},
        {"name": "x", "monthlyAllocationTokens": -5},
    ]
    for body in bad_plans:
        refused(await call(api, "POST", "/plans", body), 422)
    assert ok(await call(api, "GET", "/plans")) == []
    refused(await call(api, "POST", "/renewals/run", {"tier": "platinum"}), 400)
    refused(await call(api, "POST", "/renewals/run", {"limit": 0}), 422)
    refused(await call(api, "POST", "/renewals/run", {"dryRun": "yes"}), 422)
    refused(await call(api, "POST", "/renewals/run", {}, scope="read"), 403)
