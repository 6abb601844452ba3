"""Signing up, in and out in a real browser, a refused form, and the balance widget
embedded by another origin (registered or not). Screenshots of each page."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser, Page, expect

from tests.web.conftest import LiveServer, screenshot, watched_page

PASSWORD = "correct horse battery"


async def test_a_person_signs_up_signs_in_and_lands_on_their_tokens(
    live_server: LiveServer, page: Page
) -> None:
    await page.goto(f"{live_server.url}/signup")
    await expect(page.get_by_role("heading", name="Create an account")).to_be_visible()
    await screenshot(page, "signup")
    await page.get_by_label("Email").fill("new@example.com")
    await page.get_by_label("Password", exact=False).first.fill(PASSWORD)
    await page.get_by_label("Password again").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await page.wait_for_url(f"{live_server.url}/login?signed_up=1")
    await expect(page.get_by_role("status")).to_contain_text("If this email was new")
    await screenshot(page, "login-after-signup")
    await page.get_by_label("Email").fill("new@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{live_server.url}/tokens")
    account = await live_server.services.accounts.get("new@example.com")
    assert account.user_id is not None


async def test_sign_in_refusal_then_sign_in_and_out(live_server: LiveServer, page: Page) -> None:
    await live_server.services.tokens.open_wallet("bob")
    await live_server.services.accounts.create("bob@example.com", PASSWORD, user_id="bob")
    await page.goto(f"{live_server.url}/login")
    await screenshot(page, "login")
    await page.get_by_label("Email").fill("bob@example.com")
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("Sign-in failed")
    await screenshot(page, "login-refused")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{live_server.url}/tokens")
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{live_server.url}/login")


async def test_a_form_without_its_csrf_token_is_refused(
    live_server: LiveServer, page: Page
) -> None:
    await live_server.services.accounts.create("carol@example.com", PASSWORD, role="admin")
    await page.goto(f"{live_server.url}/login")
    await page.evaluate("document.querySelector('input[name=csrf_token]').remove()")
    await page.get_by_label("Email").fill("carol@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    await screenshot(page, "csrf-refused")
    assert (await page.context.cookies()) == [] or all(
        cookie["name"] != "tb_session" for cookie in await page.context.cookies()
    )


@pytest.fixture
def other_origin(live_server: LiveServer) -> Iterator[str]:
    """An app's page on another loopback origin, embedding the widget."""
    body = (
        "<!doctype html><title>An app</title><h1>An app</h1>"
        f'<script src="{live_server.url}/static/widget.js" defer></script>'
        "<p>Your tokens: <tokenbank-balance></tokenbank-balance></p>"
    ).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_the_widget_shows_the_balance_only_on_a_registered_origin(
    browser: Browser, live_server: LiveServer, other_origin: str
) -> None:
    services = live_server.services
    await services.tokens.open_wallet("dan")
    await services.tokens.credit("dan", amount=500, operation_type="bonus")
    await services.accounts.create("dan@example.com", PASSWORD, user_id="dan")
    async with watched_page(browser) as (app_page, watch):
        # Signed in at tokenbank: the session cookie is this host's, whatever the port.
        await app_page.goto(f"{live_server.url}/login")
        await app_page.get_by_label("Email").fill("dan@example.com")
        await app_page.get_by_label("Password").fill(PASSWORD)
        await app_page.get_by_role("button", name="Sign in").click()
        await app_page.wait_for_url(f"{live_server.url}/tokens")
        # Not registered: the browser refuses the answer, the widget says so.
        await app_page.goto(other_origin)
        await expect(app_page.locator("tokenbank-balance")).to_contain_text("unavailable")
        await screenshot(app_page, "widget-unregistered-origin")
        assert watch.blocked == []
        await services.apps.create_app("an-app", scopes=["read"])
        await services.apps.add_origin("an-app", other_origin)
        await app_page.reload()
        widget = app_page.locator("tokenbank-balance")
        await expect(widget).to_contain_text("500 tokens")
        await expect(widget.get_by_role("link", name="Buy more")).to_have_attribute(
            "href", f"{live_server.url}/tokens"
        )
        await screenshot(app_page, "widget-registered-origin")
