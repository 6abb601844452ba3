"""The browser harness on the pages that exist today: /docs and the fake Stripe's pay
page, and a control proving the external-request guard catches what it should."""

from __future__ import annotations

import asyncio
import time

import httpx
from playwright.async_api import Browser, Page, expect

from tests.web.conftest import LiveServer, is_local, screenshot, watched_page

CREDIT_TIMEOUT_S = 10.0
STARTER_TOKENS = 150_000  # the "starter" pack of `packs seed-defaults`


async def test_the_docs_page_renders_from_tokenbank_alone(
    page: Page, live_server: LiveServer
) -> None:
    await page.goto(f"{live_server.url}/docs")
    # Swagger UI draws the title once it has fetched and parsed /openapi.json.
    await expect(page.locator(".information-container .title")).to_contain_text("tokenbank")
    await expect(page.locator(".opblock").first).to_be_visible()
    assert (await screenshot(page, "docs")).stat().st_size > 0


async def _start_checkout(live_server: LiveServer, user_id: str) -> dict[str, str]:
    """POST /api/checkout over HTTP for the starter pack; its data (purchaseId, url...)."""
    key = await live_server.api_key("payments")
    body = {
        "userId": user_id,
        "packId": "starter",
        "successUrl": f"{live_server.url}/healthz?paid={{CHECKOUT_SESSION_ID}}",
        "cancelUrl": f"{live_server.url}/healthz?canceled=1",
    }
    async with httpx.AsyncClient(base_url=live_server.url, trust_env=False) as client:
        answer = await client.post(
            "/api/checkout", json=body, headers={"Authorization": f"Bearer {key}"}
        )
    assert answer.status_code == 200, answer.text
    data: dict[str, str] = answer.json()["data"]
    return data


async def _paid_tokens(live_server: LiveServer, user_id: str, expected: int) -> int:
    """The wallet's paid tokens once they reach `expected`, or when waiting is over."""
    deadline = time.monotonic() + CREDIT_TIMEOUT_S
    while True:
        balance = await live_server.services.tokens.get_balance(user_id)
        assert balance is not None
        if balance.paid_tokens >= expected or time.monotonic() > deadline:
            return balance.paid_tokens
        await asyncio.sleep(0.05)


async def test_paying_on_the_checkout_page_credits_the_wallet(
    page: Page, live_server: LiveServer
) -> None:
    services = live_server.services
    await (await services.payments.packs()).seed_defaults()
    await services.tokens.open_wallet("alice")
    checkout = await _start_checkout(live_server, "alice")
    assert is_local(checkout["url"]), checkout["url"]

    await page.goto(checkout["url"])
    await expect(page.locator("#amount")).to_have_text("15.00 USD")
    await screenshot(page, "checkout")
    await page.click("#pay")
    await page.wait_for_url(f"{live_server.url}/healthz?paid={checkout['checkoutSessionId']}")
    assert await _paid_tokens(live_server, "alice", STARTER_TOKENS) == STARTER_TOKENS


async def test_the_guard_reports_a_request_to_another_host(browser: Browser) -> None:
    async with watched_page(browser) as (page, watch):
        await page.set_content('<p>hi</p><script src="https://example.com/x.js"></script>')
    assert watch.blocked == ["https://example.com/x.js"]
    assert "request to another host: https://example.com/x.js" in watch.failures()


async def test_the_guard_refuses_a_web_socket_to_another_host(browser: Browser) -> None:
    async with watched_page(browser) as (page, watch):
        await page.evaluate("new WebSocket('wss://example.com/socket')")
        for _ in range(100):  # the socket opens after evaluate returns
            if watch.blocked:
                break
            await asyncio.sleep(0.01)
    assert watch.blocked == ["wss://example.com/socket"]


async def test_the_guard_reports_a_javascript_error(browser: Browser) -> None:
    async with watched_page(browser) as (page, watch):
        await page.set_content("<script>throw new Error('boom')</script>")
        await page.evaluate("console.error('logged')")
    assert watch.blocked == []
    assert any("boom" in failure for failure in watch.failures()), watch.failures()
    assert any("logged" in failure for failure in watch.failures()), watch.failures()


def test_only_loopback_and_networkless_urls_are_local() -> None:
    local = ["http://127.0.0.1:8000/docs", "http://localhost/x", "about:blank", "data:,x"]
    remote = ["https://example.com/x.js", "http://10.0.0.1/", "http://127.0.0.1.example.com/"]
    assert all(is_local(url) for url in local)
    assert not any(is_local(url) for url in remote)
