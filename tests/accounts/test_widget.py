"""The balance widget answers only registered origins, for the session cookie (option
A) or a user JWT (option B), and says when to buy more (both engines)."""

from __future__ import annotations

from datetime import timedelta

import jwt
from typer.testing import CliRunner

from tests.accounts.conftest import JWT_SECRET, Site

APP_ORIGIN = "https://app.example.com"


def user_jwt(site: Site, user_id: str, seconds: int = 3_600) -> str:
    expires = site.clock() + timedelta(seconds=seconds)
    return jwt.encode({"sub": user_id, "exp": expires}, JWT_SECRET, algorithm="HS256")


async def test_a_registered_origin_gets_the_balance_with_credentials(site: Site) -> None:
    await site.services.apps.add_origin("app", APP_ORIGIN + "/")
    assert (await site.sign_in("bob@example.com")).status_code == 303
    answer = await site.client.get("/api/widget/balance", headers={"Origin": APP_ORIGIN})
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == APP_ORIGIN
    assert answer.headers["access-control-allow-credentials"] == "true"
    data = answer.json()["data"]
    assert (data["balance"], data["low"]) == (1_000, False)
    assert data["buyTokensUrl"].endswith("/tokens")


async def test_an_unregistered_origin_gets_nothing(site: Site) -> None:
    assert (await site.sign_in("bob@example.com")).status_code == 303
    answer = await site.client.get("/api/widget/balance", headers={"Origin": "https://evil.test"})
    assert answer.status_code == 403
    assert "access-control-allow-origin" not in answer.headers
    preflight = await site.client.options(
        "/api/widget/balance",
        headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers


async def test_a_user_jwt_works_without_a_cookie_and_a_low_balance_says_buy_more(
    site: Site,
) -> None:
    await site.services.apps.add_origin("app", APP_ORIGIN)
    assert (await site.services.tokens.debit("bob", amount=950)).success
    preflight = await site.client.options(
        "/api/widget/balance",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-headers"] == "Authorization"
    headers = {"Origin": APP_ORIGIN, "Authorization": f"Bearer {user_jwt(site, 'bob')}"}
    answer = await site.client.get("/api/widget/balance", headers=headers)
    assert answer.status_code == 200
    assert answer.json()["data"]["low"] is True
    expired = {**headers, "Authorization": f"Bearer {user_jwt(site, 'bob', seconds=-10)}"}
    assert (await site.client.get("/api/widget/balance", headers=expired)).status_code == 401
    forged = jwt.encode({"sub": "bob", "exp": site.clock() + timedelta(hours=1)}, "x" * 40)
    bad = {**headers, "Authorization": f"Bearer {forged}"}
    assert (await site.client.get("/api/widget/balance", headers=bad)).status_code == 401


async def test_the_widget_script_is_served_by_tokenbank(site: Site) -> None:
    answer = await site.client.get("/static/widget.js")
    assert answer.status_code == 200
    assert "customElements.define" in answer.text


def test_origins_are_managed_from_the_command_line(database_url: str) -> None:
    from tokenbank.cli import app as cli

    runner = CliRunner()
    env = {"TOKENBANK_DATABASE_URL": database_url}
    assert runner.invoke(cli, ["apps", "create", "shop"], env=env).exit_code == 0
    added = runner.invoke(cli, ["apps", "add-origin", "shop", "HTTPS://Shop.Example"], env=env)
    assert added.exit_code == 0, added.output
    assert "https://shop.example" in runner.invoke(cli, ["apps", "origins", "shop"], env=env).output
    bad = runner.invoke(cli, ["apps", "add-origin", "shop", "javascript:alert(1)"], env=env)
    assert bad.exit_code == 2
