"""The issue's journeys in a real browser: a user signs up, buys a pack through Checkout
while another tab's balance updates by itself, crosses both alert thresholds, sets up
auto-recharge and signs out; a superadmin grants tokens and the audit log shows it; an
admin cannot grant and a user cannot open the admin pages. Screenshots of every page."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.web.conftest import LiveServer, screenshot
from tokenbank.payments.recharge import RechargeService

PASSWORD = "correct horse battery"


async def sign_up(page: Page, live_server: LiveServer, email: str) -> str:
    await page.goto(f"{live_server.url}/signup")
    await page.get_by_label("Email").fill(email)
    await page.locator("#password").fill(PASSWORD)
    await page.get_by_label("Password again").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await page.wait_for_url(f"{live_server.url}/login?signed_up=1")
    await screenshot(page, "login-after-signup")
    await sign_in(page, live_server, email)
    await page.wait_for_url(f"{live_server.url}/tokens")
    user_id = (await live_server.services.accounts.get(email)).user_id
    assert user_id is not None
    return user_id


async def sign_in(page: Page, live_server: LiveServer, email: str) -> None:
    await page.goto(f"{live_server.url}/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()


async def test_a_user_buys_a_pack_watches_the_balance_and_sets_up_auto_recharge(
    live_server: LiveServer, page: Page
) -> None:
    services = live_server.services
    await (await services.payments.packs()).seed_defaults()
    user_id = await sign_up(page, live_server, "erin@example.com")
    await expect(page.locator("#balance")).to_have_text("0")
    await screenshot(page, "tokens-empty")

    # A second tab buys; the first one, left open, follows the balance by itself.
    buyer = await page.context.new_page()
    await buyer.goto(f"{live_server.url}/tokens")
    await buyer.get_by_role("button", name="Buy Starter", exact=False).click()
    await buyer.wait_for_url(f"{live_server.stripe.api_base}/pay/*")
    await screenshot(buyer, "checkout-pay-page")
    await buyer.locator("#pay").click()
    await buyer.wait_for_url(f"{live_server.url}/tokens/bought*")
    await screenshot(buyer, "tokens-bought")
    await expect(page.locator("#balance")).to_have_text("150,000", timeout=5_000)
    await expect(page.locator("#paid")).to_have_text("150,000")
    # The open page's grants table follows too (fetched again when paid tokens change).
    await expect(page.locator("#grants")).to_contain_text("150,000", timeout=5_000)
    await screenshot(page, "tokens-after-purchase")

    # An app's deducts take it below the warning and then the critical threshold.
    assert (await services.tokens.debit(user_id, amount=149_500)).success
    await expect(page.locator("#balance-alerts .alert.warning")).to_be_visible(timeout=5_000)
    await screenshot(page, "tokens-low-balance")
    assert (await services.tokens.debit(user_id, amount=450)).success
    await expect(page.locator("#balance-alerts .alert.critical")).to_be_visible(timeout=5_000)
    # The open page's recent alerts follow the events written for the two crossings.
    recent = page.locator("#recent-alerts li")
    await expect(recent.and_(page.locator("[data-type='balance.critical']"))).to_be_visible()
    await expect(recent.and_(page.locator("[data-type='balance.low']"))).to_be_visible()
    await screenshot(page, "tokens-critical-balance")

    # Auto-recharge: a saved card (Stripe.js is not loaded in tests), then the form.
    recharges = RechargeService(services.payments, services.tokens)
    setup = await recharges.start_card_setup(user_id)
    client = live_server.stripe.client()
    card = client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    client.v1.setup_intents.confirm(setup.setup_intent_id, {"payment_method": card.id})
    await recharges.save_card(user_id, card.id)
    await page.goto(f"{live_server.url}/settings/billing")
    await expect(page.locator("#card-unavailable")).to_be_visible()
    await page.get_by_label("Recharge automatically").check()
    await page.get_by_label("When available tokens fall below").fill("1000")
    await page.get_by_label("Buy").select_option("starter")
    await page.get_by_role("button", name="Save auto-recharge").click()
    await expect(page.get_by_label("Recharge automatically")).to_be_checked()
    await screenshot(page, "billing")
    settings = await recharges.get(user_id)
    assert (settings.enabled, settings.threshold_tokens) == (True, 1_000)

    for path, name in (("/tokens/history", "history"), ("/tokens/usage", "usage")):
        await page.goto(f"{live_server.url}{path}")
        await expect(page.locator("h1")).to_be_visible()
        await screenshot(page, name)

    await buyer.close()
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{live_server.url}/login")


async def test_a_superadmin_grants_and_the_audit_log_shows_it(
    live_server: LiveServer, page: Page
) -> None:
    services = live_server.services
    await services.tokens.open_wallet("frank")
    await services.accounts.create("root@example.com", PASSWORD, role="superadmin")
    await sign_in(page, live_server, "root@example.com")
    await page.goto(f"{live_server.url}/admin/tokens")
    await expect(page.locator("h1")).to_be_visible()
    await screenshot(page, "admin-dashboard")
    await page.goto(f"{live_server.url}/admin/accounts/frank")
    await page.get_by_role("textbox", name="Tokens").fill("2500")
    await page.get_by_label("Reason").fill("support ticket 42")
    await page.get_by_role("button", name="Grant").click()
    await page.wait_for_load_state()
    await screenshot(page, "admin-account")
    balance = await services.tokens.get_balance("frank")
    assert balance is not None and balance.tokens_balance == 2_500
    await page.goto(f"{live_server.url}/admin/audit")
    await expect(page.locator("main")).to_contain_text("frank")
    await expect(page.locator("main")).to_contain_text("root@example.com")
    await screenshot(page, "admin-audit")
    for path, name in (
        ("/admin/accounts", "admin-accounts"),
        ("/admin/settings", "admin-settings"),
        ("/admin/packs", "admin-packs"),
        ("/admin/plans", "admin-plans"),
        ("/admin/apps", "admin-apps"),
    ):
        await page.goto(f"{live_server.url}{path}")
        await expect(page.locator("h1")).to_be_visible()
        await screenshot(page, name)


async def test_an_admin_cannot_grant_and_a_user_cannot_open_admin(
    live_server: LiveServer, page: Page
) -> None:
    services = live_server.services
    await services.tokens.open_wallet("gina")
    await services.accounts.create("viewer@example.com", PASSWORD, role="admin")
    await services.accounts.create("gina@example.com", PASSWORD, user_id="gina")
    await sign_in(page, live_server, "viewer@example.com")
    await page.goto(f"{live_server.url}/admin/accounts/gina")
    await expect(page.locator("main")).to_be_visible()
    if await page.get_by_role("button", name="Grant").count():
        await page.get_by_role("textbox", name="Tokens").fill("100")
        await page.get_by_label("Reason").fill("not allowed")
        await page.get_by_role("button", name="Grant").click()
        await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    balance = await services.tokens.get_balance("gina")
    assert balance is not None and balance.tokens_balance == 0
    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, live_server, "gina@example.com")
    answer = await page.goto(f"{live_server.url}/admin/tokens")
    assert answer is not None and answer.status == 403
    await screenshot(page, "admin-refused-for-user")
