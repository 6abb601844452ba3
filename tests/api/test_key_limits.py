"""Per-key limits over HTTP (issue 14): a request rate (429) and a daily spend cap (402).

Both engines, both dialects. What is across processes (two apps over one PostgreSQL,
many concurrent requests) is in ``test_key_limits_shared.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select
from typer.testing import CliRunner

from tests.api.conftest import Api
from tests.api.test_dialect_b import END, START, make_feature, make_user
from tokenbank.apps.keys import display_prefix
from tokenbank.apps.repository import request_counts
from tokenbank.cli import app as cli
from tokenbank.db.engine import read_transaction
from tokenbank.db.models import API_SCOPES
from tokenbank.errors import InvalidInput
from tokenbank.ledger.repository.spend_caps import daily_spend

DEDUCT = "/api/tokens/deduct"
COUNTER_TABLES = ("api_key_request_counts", "api_key_daily_spend")


async def limited_key(api: Api, slug: str = "limited", **limits: Any) -> str:
    _, key = await api.services.apps.create_app(slug, scopes=list(API_SCOPES), limits=limits)
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def deduct(api: Api, key: str, amount: int = 1, **body: Any) -> Any:
    payload = {"userId": "u1", "amount": amount, **body}
    return await api.client.post(DEDUCT, json=payload, headers=bearer(key))


async def usage_entries(api: Api, user_id: str = "u1") -> int:
    entries = await api.tokens.get_ledger().get_user_entries(user_id, operation_type="usage")
    return len(entries)


async def balance(api: Api, user_id: str = "u1") -> int:
    info = await api.tokens.get_balance(user_id)
    assert info is not None
    return info.tokens_balance


@contextmanager
def statements_of(api: Api, engine: Any) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


# --- the request rate -------------------------------------------------------------------------


async def test_over_the_rate_is_a_429_with_retry_after_and_writes_nothing(api: Api) -> None:
    await make_user(api, tokens=100)
    key = await limited_key(api, rate_limit_per_minute=3)
    api.clock.advance(15)  # 45 seconds before the minute ends
    for _ in range(3):
        assert (await deduct(api, key)).status_code == 200

    refused = await deduct(api, key, referenceId="over-the-rate")

    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "45"
    body = refused.json()
    assert body["code"] == "rate_limited"
    assert body["retryAfterSeconds"] == 45
    assert "3 requests per minute" in body["error"]
    assert await balance(api) == 97
    assert await usage_entries(api) == 3


async def test_the_window_frees_when_the_minute_ends(api: Api) -> None:
    await make_user(api, tokens=100)
    key = await limited_key(api, rate_limit_per_minute=2)
    for _ in range(2):
        assert (await deduct(api, key)).status_code == 200
    assert (await deduct(api, key)).status_code == 429
    api.clock.advance(59)
    refused = await deduct(api, key)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"

    api.clock.advance(1)

    assert (await deduct(api, key)).status_code == 200
    assert (await deduct(api, key)).status_code == 200
    assert (await deduct(api, key)).status_code == 429
    assert await usage_entries(api) == 4


async def test_a_429_speaks_the_token_process_dialect_there(api: Api) -> None:
    await make_feature(api)
    await make_user(api, tokens=100)
    key = await limited_key(api, rate_limit_per_minute=1)
    body = {"user_id": "u1", "feature_endpoint_id": "chat"}
    headers = {"x-server-api-key": key}
    assert (await api.client.post(START, json=body, headers=headers)).status_code == 200

    refused = await api.client.post(START, json=body, headers=headers)

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) == 60
    assert refused.json()["success"] is False
    assert refused.json()["status"] == 429
    assert refused.json()["code"] == "rate_limited"


async def test_each_key_has_its_own_rate(api: Api) -> None:
    await make_user(api, tokens=100)
    first = await limited_key(api, "first", rate_limit_per_minute=1)
    second = await limited_key(api, "second", rate_limit_per_minute=1)
    assert (await deduct(api, first)).status_code == 200
    assert (await deduct(api, first)).status_code == 429
    assert (await deduct(api, second)).status_code == 200
    assert (await deduct(api, api.keys["all"])).status_code == 200  # no limit


# --- the daily spend cap ----------------------------------------------------------------------


async def test_a_deduct_past_the_daily_cap_is_a_402_of_its_own(api: Api) -> None:
    await make_user(api, tokens=1_000)
    key = await limited_key(api, daily_spend_cap_tokens=10)
    assert (await deduct(api, key, 6)).status_code == 200

    refused = await deduct(api, key, 5)

    assert refused.status_code == 402
    assert refused.json()["code"] == "daily_spend_cap_exceeded"
    assert refused.json()["required"] == 5
    assert "buyTokensUrl" not in refused.json()  # buying tokens would not help
    assert await balance(api) == 994
    assert (await deduct(api, key, 4)).status_code == 200
    assert (await deduct(api, key, 1)).status_code == 402
    assert await balance(api) == 990


async def test_the_cap_is_per_utc_day(api: Api) -> None:
    await make_user(api, tokens=1_000)
    key = await limited_key(api, daily_spend_cap_tokens=10)
    api.clock.advance(23 * 3600 + 3599)  # 23:59:59
    assert (await deduct(api, key, 10)).status_code == 200
    assert (await deduct(api, key, 1)).status_code == 402

    api.clock.advance(1)  # midnight UTC

    assert (await deduct(api, key, 10)).status_code == 200
    assert await balance(api) == 980


async def test_a_refused_debit_gives_its_share_of_the_cap_back(api: Api) -> None:
    await make_user(api, tokens=5)
    key = await limited_key(api, daily_spend_cap_tokens=10)
    insufficient = await deduct(api, key, 8)
    assert insufficient.status_code == 402
    assert insufficient.json()["code"] == "insufficient_tokens"
    await api.tokens.credit("u1", amount=100, operation_type="admin_grant")

    assert (await deduct(api, key, 10)).status_code == 200
    assert await spent_today(api) == 10


async def test_a_replayed_deduct_counts_once(api: Api) -> None:
    await make_user(api, tokens=100)
    key = await limited_key(api, daily_spend_cap_tokens=10)
    first = await deduct(api, key, 6, referenceId="job-1")
    again = await deduct(api, key, 6, referenceId="job-1")
    assert first.status_code == again.status_code == 200
    assert again.json()["data"]["replayed"] is True
    assert await spent_today(api) == 6
    assert (await deduct(api, key, 4)).status_code == 200


async def test_holds_must_fit_and_captures_count(api: Api) -> None:
    await make_user(api, tokens=100)
    key = await limited_key(api, daily_spend_cap_tokens=10)
    too_big = await api.client.post(
        "/api/tokens/holds", json={"userId": "u1", "amount": 11}, headers=bearer(key)
    )
    assert too_big.status_code == 402 and too_big.json()["code"] == "daily_spend_cap_exceeded"
    hold = await api.client.post(
        "/api/tokens/holds", json={"userId": "u1", "amount": 8}, headers=bearer(key)
    )
    hold_id = hold.json()["data"]["holdId"]
    assert await spent_today(api) == 0  # a hold spends nothing yet
    assert (await deduct(api, key, 5)).status_code == 200

    capture = f"/api/tokens/holds/{hold_id}/capture"
    refused = await api.client.post(capture, json={"amount": 6}, headers=bearer(key))
    assert refused.status_code == 402 and refused.json()["code"] == "daily_spend_cap_exceeded"
    view = await api.tokens.get_hold(hold_id)
    assert view is not None and view.status == "pending"  # the app may capture less

    assert (await api.client.post(capture, json={"amount": 5}, headers=bearer(key))).is_success
    assert await spent_today(api) == 10
    assert await balance(api) == 90


async def test_the_token_process_is_capped_in_its_dialect(api: Api) -> None:
    await make_feature(api)
    await make_user(api, tokens=10_000)
    key = await limited_key(api, daily_spend_cap_tokens=150)
    headers = {"x-server-api-key": key}
    usage = {"user_id": "u1", "feature_endpoint_id": "chat", "input_token": 10}
    first = await api.client.post(END, json={**usage, "output_token": 400}, headers=headers)
    assert first.status_code == 200
    cost = 10_000 - await balance(api)
    assert 0 < cost <= 150 < 2 * cost

    refused = await api.client.post(END, json={**usage, "output_token": 400}, headers=headers)

    assert refused.status_code == 402
    assert refused.json()["success"] is False
    assert refused.json()["status"] == 402
    assert refused.json()["code"] == "daily_spend_cap_exceeded"
    assert await balance(api) == 10_000 - cost
    held = await api.client.post(
        START,
        json={"user_id": "u1", "feature_endpoint_id": "chat", "hold_tokens": 151 - cost},
        headers=headers,
    )
    assert held.status_code == 402 and held.json()["code"] == "daily_spend_cap_exceeded"


async def spent_today(api: Api) -> int:
    async with read_transaction(await api.tokens.engine()) as conn:
        total = (await conn.execute(select(func.sum(daily_spend.c.spent_tokens)))).scalar()
    return int(total or 0)


# --- keys without limits pay nothing ----------------------------------------------------------


async def test_an_unlimited_key_never_touches_the_counters(api: Api) -> None:
    await make_feature(api)
    await make_user(api, tokens=1_000)
    engine = await api.tokens.engine()
    headers = api.headers("all")
    with statements_of(api, engine) as seen:
        assert (
            await api.client.post(DEDUCT, json={"userId": "u1", "amount": 5}, headers=headers)
        ).is_success
        hold = await api.client.post(
            "/api/tokens/holds", json={"userId": "u1", "amount": 5}, headers=headers
        )
        hold_id = hold.json()["data"]["holdId"]
        capture = f"/api/tokens/holds/{hold_id}/capture"
        assert (await api.client.post(capture, json={"amount": 5}, headers=headers)).is_success
        end = {"user_id": "u1", "feature_endpoint_id": "chat", "input_token": 1, "output_token": 1}
        assert (await api.client.post(END, json=end, headers=headers)).is_success
    assert seen, "the listener saw the requests' statements"
    assert not [s for s in seen if any(table in s for table in COUNTER_TABLES)]
    async with read_transaction(engine) as conn:
        assert (await conn.execute(select(func.count()).select_from(request_counts))).scalar() == 0
        assert (await conn.execute(select(func.count()).select_from(daily_spend))).scalar() == 0


# --- managing limits --------------------------------------------------------------------------


def limits_url(slug: str, key: str) -> str:
    return f"/api/admin/apps/{slug}/keys/{display_prefix(key)}/limits"


async def test_admin_sets_and_clears_limits(api: Api) -> None:
    await make_user(api, tokens=100)
    key = await limited_key(api)
    url = limits_url("limited", key)
    admin = api.headers("admin")

    set_both = await api.client.patch(
        url, json={"rateLimitPerMinute": 1, "dailySpendCapTokens": 50}, headers=admin
    )

    assert set_both.status_code == 200
    assert set_both.json()["data"]["rateLimitPerMinute"] == 1
    assert set_both.json()["data"]["dailySpendCapTokens"] == 50
    assert (await deduct(api, key)).status_code == 200
    assert (await deduct(api, key)).status_code == 429

    cleared = await api.client.patch(url, json={"rateLimitPerMinute": None}, headers=admin)
    assert cleared.json()["data"] == {
        "keyPrefix": display_prefix(key),
        "scopes": list(API_SCOPES),
        "active": True,
        "rateLimitPerMinute": None,
        "dailySpendCapTokens": 50,
    }
    assert (await deduct(api, key)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"rateLimitPerMinute": 0},
        {"rateLimitPerMinute": -1},
        {"rateLimitPerMinute": 1_000_001},
        {"rateLimitPerMinute": "5"},
        {"rateLimitPerMinute": 5.5},
        {"rateLimitPerMinute": True},
        {"dailySpendCapTokens": 0},
        {"dailySpendCapTokens": 10**13},
        {"dailySpendCapTokens": "100"},
        {"burst": 5},
    ],
)
async def test_bad_limits_are_refused_and_change_nothing(api: Api, body: dict[str, Any]) -> None:
    key = await limited_key(api, rate_limit_per_minute=7)
    refused = await api.client.patch(
        limits_url("limited", key), json=body, headers=api.headers("admin")
    )
    assert refused.status_code == 422
    apps = {info.slug: info for info in await api.services.apps.list_apps()}
    assert apps["limited"].keys[0].rate_limit_per_minute == 7
    assert apps["limited"].keys[0].daily_spend_cap_tokens is None


async def test_limits_of_an_unknown_key_or_without_admin_scope(api: Api) -> None:
    key = await limited_key(api)
    missing = await api.client.patch(
        "/api/admin/apps/limited/keys/tb_nothere/limits",
        json={"rateLimitPerMinute": 5},
        headers=api.headers("admin"),
    )
    assert missing.status_code == 404
    forbidden = await api.client.patch(
        limits_url("limited", key), json={"rateLimitPerMinute": 5}, headers=api.headers("spend")
    )
    assert forbidden.status_code == 403


async def test_a_rotated_key_keeps_the_limits(api: Api) -> None:
    await make_user(api, tokens=100)
    await limited_key(api, rate_limit_per_minute=1, daily_spend_cap_tokens=3)
    new_key = await api.services.apps.rotate_key("limited")
    assert (await deduct(api, new_key, 3)).status_code == 200
    assert (await deduct(api, new_key, 1)).status_code == 429


def test_the_cli_sets_limits_and_refuses_bad_ones(database_url: str) -> None:
    runner = CliRunner()
    created = runner.invoke(
        cli,
        ["apps", "create", "cli-app", "--rate-per-minute", "30", "--database-url", database_url],
    )
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    prefix = display_prefix(key)
    changed = runner.invoke(
        cli,
        [
            "apps",
            "key-limits",
            "cli-app",
            prefix,
            "--rate-per-minute",
            "none",
            "--daily-cap-tokens",
            "500",
            "--database-url",
            database_url,
        ],
    )
    assert changed.exit_code == 0, changed.output
    assert "no rate limit, 500 tokens/day" in changed.output
    listed = runner.invoke(cli, ["apps", "list", "--database-url", database_url])
    assert "no rate limit, 500 tokens/day" in listed.output
    for bad in (
        ["--rate-per-minute", "abc"],
        ["--rate-per-minute", "0"],
        ["--daily-cap-tokens", "-5"],
    ):
        refused = runner.invoke(
            cli, ["apps", "key-limits", "cli-app", prefix, *bad, "--database-url", database_url]
        )
        assert refused.exit_code == 2, refused.output
    unknown = runner.invoke(
        cli,
        [
            "apps",
            "key-limits",
            "cli-app",
            "tb_nothere",
            "--rate-per-minute",
            "5",
            "--database-url",
            database_url,
        ],
    )
    assert unknown.exit_code != 0


@pytest.mark.parametrize(
    "limits",
    [
        {"rate_limit_per_minute": 0},
        {"rate_limit_per_minute": 2.0},
        {"rate_limit_per_minute": False},
        {"daily_spend_cap_tokens": -3},
        {"daily_spend_cap_tokens": "10"},
        {"burst_per_second": 5},
    ],
)
async def test_the_service_refuses_bad_limits_before_writing(
    api: Api, limits: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput):
        await api.services.apps.create_app("bad", limits=limits)
    assert "bad" not in {info.slug for info in await api.services.apps.list_apps()}
