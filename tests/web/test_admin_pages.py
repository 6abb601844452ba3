"""The admin dashboard in a real browser: a superadmin signs in, the 30-day chart is
drawn by the served Plotly with no request off the machine and no script error, a grant
is made from the keyboard, and a key is revoked through its confirmation."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from tests.web.conftest import LiveServer, screenshot

PASSWORD = "correct horse battery"


async def _sign_in_as_superadmin(page: Page, live_server: LiveServer) -> None:
    await live_server.services.accounts.create("root@example.com", PASSWORD, role="superadmin")
    await page.goto(f"{live_server.url}/login")
    await page.get_by_label("Email").fill("root@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{live_server.url}/admin/tokens")


async def test_the_dashboard_draws_its_chart_and_a_grant_is_made(
    page: Page, live_server: LiveServer
) -> None:
    tokens = live_server.services.tokens
    await tokens.open_wallet("alice")
    await tokens.credit("alice", amount=5_000, operation_type="purchase")
    await tokens.debit("alice", amount=1_200, metadata={"model": "gpt-4o"})
    await _sign_in_as_superadmin(page, live_server)
    chart = page.locator("#daily-chart")
    await expect(chart).to_be_visible()
    await expect(chart.locator("svg.main-svg").first).to_be_visible()
    # The table of the same figures folds under the chart, one click (or key) away.
    await expect(page.locator("#days-table")).not_to_have_attribute("open", "")
    await expect(page.locator("#fig-used .value")).to_have_text("1,200")
    await screenshot(page, "admin-dashboard")

    await page.get_by_role("link", name="alice", exact=True).click()
    await page.get_by_role("textbox", name="Tokens").fill("300")
    await page.get_by_label("Reason").fill("Welcome back")
    await page.get_by_label("Reason").press("Enter")
    await expect(page.get_by_role("status")).to_have_text("Tokens granted.")
    await expect(page.locator("#fig-balance .value")).to_have_text("4,100")
    await screenshot(page, "admin-account")
    [entry] = await live_server.services.accounts.audit_entries()
    assert (entry.action, entry.before, entry.after["balance"]) == (
        "wallet.admin_grant",
        {"balance": 3_800},
        4_100,
    )


async def test_a_key_is_revoked_after_its_confirmation(page: Page, live_server: LiveServer) -> None:
    _, key = await live_server.services.apps.create_app("shop", scopes=["read"])
    await _sign_in_as_superadmin(page, live_server)
    await page.goto(f"{live_server.url}/admin/apps")
    revoke = page.get_by_role("button", name=f"Revoke key {key[:10]}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    await revoke.click()
    await expect(revoke).to_be_visible()  # dismissed: nothing sent
    assert await live_server.services.apps.authenticate(key) is not None
    page.once("dialog", lambda dialog: dialog.accept())
    await revoke.click()
    await expect(page.get_by_role("status")).to_have_text("Saved.")
    await expect(page.get_by_text("revoked", exact=True)).to_be_visible()
    await screenshot(page, "admin-apps")
    assert await live_server.services.apps.authenticate(key) is None


async def test_a_webhook_endpoint_is_added_and_its_secret_shown_once(
    page: Page, live_server: LiveServer
) -> None:
    await live_server.services.apps.create_app("shop", scopes=["read"])
    await _sign_in_as_superadmin(page, live_server)
    await page.goto(f"{live_server.url}/admin/webhooks")
    await page.get_by_label("App").select_option("shop")
    await page.get_by_label("URL").fill("https://shop.example/hooks/tokenbank")
    await page.get_by_label("Description").fill("Balance alerts")
    await page.get_by_label("balance.low").check()
    await page.get_by_label("purchase.succeeded").check()
    await page.get_by_role("button", name="Add endpoint").click()
    secret = page.get_by_label("Secret")
    await expect(secret).to_have_value(re.compile(r"^whsec_"))
    await screenshot(page, "admin-webhook-secret")
    await page.get_by_role("link", name="Back to the webhooks").click()
    await page.wait_for_url(re.compile(r"/admin/webhooks\?saved=1#endpoint-"))
    await expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    endpoint_heading = page.get_by_role("heading", name="https://shop.example/hooks/tokenbank")
    await expect(endpoint_heading).to_be_visible()
    assert "whsec_" not in await page.content()  # the secret was shown that once only
    await screenshot(page, "admin-webhooks")
    [endpoint] = await live_server.services.webhooks.list_endpoints()
    assert sorted(endpoint.event_types) == ["balance.low", "purchase.succeeded"]
