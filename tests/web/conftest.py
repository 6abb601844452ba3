"""Browser tests: Debian's headless chromium, driven by Playwright, against a real server.

Fixtures: ``browser`` (one chromium for the session), ``page`` (a fresh context per
test that fails the test on a request off the machine or a JavaScript error),
``live_server`` (tokenbank served by uvicorn on 127.0.0.1, Stripe at a loopback fake);
and ``screenshot(page, name)`` to keep a PNG of what the page looked like.

Why Playwright's async API, every test in the session's event loop: the rest of the
suite is asyncio (pytest-asyncio, auto mode), and a page test wants to seed and check
through the same async services (``await live_server.services.tokens...``). The sync
API cannot share a thread with a running event loop (it runs its own, in a greenlet,
and refuses to start inside another), so it would push the server into a thread and
every service call through a loop-to-loop bridge. With the async API, the browser, the
server and the test share one loop; Playwright's objects belong to the loop that made
them, and the browser lives for the session, so that loop is the session's: every async
test and fixture here runs in it (``pytest_collection_modifyitems`` marks the tests; a
new async fixture here needs ``@pytest_asyncio.fixture(loop_scope="session")``).

Ask for ``live_server`` before ``page`` (``live_server: LiveServer, page: Page``):
fixtures end in reverse order, so the page closes before the server stops; the other
way round, a page still streaming the live balance sees its stream cut and logs it.

Why SQLite only: the pages are drawn from services whose every query already runs on
both engines in the rest of the suite; a browser test checks what the page shows and
sends, and running each twice would double the slowest tests for nothing they can find.

Never ``playwright install`` (it downloads a browser; nothing but package registries is
reachable): chromium comes from Debian (scripts/ensure-chromium.sh, run by `make test`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Route,
    WebError,
    WebSocketRoute,
    async_playwright,
)

from tests.payments.support import WEBHOOK_SECRET, stripe_settings
from tokenbank.api.app import create_app
from tokenbank.api.state import Services
from tokenbank.testing.localstripe import LocalStripe
from tokenbank.testing.stripe_front import StripeFront

CHROMIUM = Path("/usr/bin/chromium")
DOCUMENT_STATUS_MESSAGE = "Failed to load resource: the server responded with a status of 4"
# No sandbox: the tests run as root, where chromium refuses to start with one. No
# background networking: no update checks or field trials trying to leave the machine.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking"]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
# URLs that load nothing over the network (a page made with set_content is about:blank).
NETWORKLESS_SCHEMES = frozenset({"about", "data", "blob"})
WEB_TESTS = Path(__file__).parent
SCREENSHOTS = WEB_TESTS / "screenshots"
# Playwright waits 30 s by default: a broken page should fail a test in seconds.
ACTION_TIMEOUT_MS = 5_000
# A navigation waits for the page's "load": every subresource, each passing through
# PageWatch.route in this process. In a full run on the 2-core machine a first
# navigation once took over 5 s (the page had arrived; its load had not).
NAVIGATION_TIMEOUT_MS = 15_000
SERVER_START_TIMEOUT_S = 10.0
SERVER_STOP_TIMEOUT_S = 10.0
_app_numbers = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every async test under tests/web runs in the session's loop, the browser's.

    This hook sees the whole session's items, hence the path check."""
    in_session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if item.path.is_relative_to(WEB_TESTS) and pytest_asyncio.is_async_test(item):
            item.add_marker(in_session_loop, append=False)


# --------------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, or a skip where it is not installed (and cannot be: CI and
    `make test` as root install it with scripts/ensure-chromium.sh)."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} not found: the browser tests need Debian's chromium package"
            " (scripts/ensure-chromium.sh installs it when run as root)"
        )
    return CHROMIUM


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


def is_local(url: str) -> bool:
    """Whether loading `url` stays on this machine (loopback, or no network at all)."""
    parts = urlsplit(url)
    if parts.scheme in NETWORKLESS_SCHEMES:
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname in LOOPBACK_HOSTS


@dataclass
class PageWatch:
    """What the pages of one browser context did that fails a test: requests to
    another host (aborted, so nothing leaves the machine) and JavaScript errors."""

    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Pages (documents) the browser navigated to: a 4xx page is an answer a test
    # checks (a refused sign-in, a CSRF refusal), and chromium logs it as a console
    # error; a 4xx of a script or stylesheet stays a failure.
    documents: set[str] = field(default_factory=set)

    def on_request(self, request: Request) -> None:
        if request.is_navigation_request():
            self.documents.add(request.url)

    async def route(self, route: Route) -> None:
        url = route.request.url
        if is_local(url):
            await route.fallback()  # on to a test's own route, else to the network
            return
        self.blocked.append(url)
        await route.abort("blockedbyclient")

    async def refuse_web_socket(self, socket: WebSocketRoute) -> None:
        """Routes never see WebSockets: one to another host comes here, is never
        connected to its server, and is closed."""
        self.blocked.append(socket.url)
        await socket.close()

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location["url"]
        if url in self.documents and message.text.startswith(DOCUMENT_STATUS_MESSAGE):
            return
        self.errors.append(f"console error: {message.text} at {url}")

    def on_web_error(self, error: WebError) -> None:
        self.errors.append(f"uncaught exception: {error.error}")

    def failures(self) -> list[str]:
        return [f"request to another host: {url}" for url in self.blocked] + self.errors


@contextlib.asynccontextmanager
async def watched_page(browser: Browser) -> AsyncIterator[tuple[Page, PageWatch]]:
    """A page in a new context whose every request and error `PageWatch` sees; the
    context is closed on exit, so the watch holds everything the pages did."""
    context = await browser.new_context()
    watch = PageWatch()
    try:
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
        # On the context, not the page: popups and new tabs are watched too.
        await context.route("**/*", watch.route)
        await context.route_web_socket(lambda url: not is_local(url), watch.refuse_web_socket)
        context.on("request", watch.on_request)
        context.on("console", watch.on_console)
        context.on("weberror", watch.on_web_error)
        yield await context.new_page(), watch
    finally:
        await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page; the test fails (at teardown) if it asked another host for anything
    or hit a JavaScript error."""
    async with watched_page(browser) as (new_page, watch):
        yield new_page
    if watch.failures():
        pytest.fail("the page misbehaved:\n" + "\n".join(watch.failures()), pytrace=False)


async def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as tests/web/screenshots/<name>.png (git-ignored); its path."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"a screenshot name is a plain file name, not {name!r}")
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=path, full_page=True)
    return path


# ---------------------------------------------------------------------- the live server


@pytest.fixture(scope="session")
def stripe_front() -> Iterator[StripeFront]:
    """A session's fake Stripe: localstripe behind the front (Checkout, the pay page)."""
    with LocalStripe() as localstripe, StripeFront(localstripe) as front:
        yield front


@dataclass(frozen=True)
class LiveServer:
    url: str  # http://127.0.0.1:PORT, also the app's public_url
    services: Services  # app.state.services: seed and check through these
    stripe: StripeFront  # posts to this server's /api/stripe/webhook

    async def api_key(self, *scopes: str) -> str:
        """A new app's API key with these scopes (an app per call)."""
        _, key = await self.services.apps.create_app(
            f"web-app-{next(_app_numbers)}", scopes=list(scopes)
        )
        return key


def _loopback_listener() -> socket.socket:
    """Bound before the app exists, so its public_url is known and no one takes the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    return listener


async def _until_started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if task.done():
            task.result()  # raises what stopped the server
            raise RuntimeError("the live server stopped before it started")
        if time.monotonic() > deadline:
            raise RuntimeError("the live server did not start in time")
        await asyncio.sleep(0.01)


@pytest.fixture
def engine_name() -> str:
    """SQLite only (module docstring): overrides the suite's both-engines parameter."""
    return "sqlite"


@pytest_asyncio.fixture(loop_scope="session")
async def live_server(database_url: str, stripe_front: StripeFront) -> AsyncIterator[LiveServer]:
    """tokenbank on a fresh database, served over HTTP in this event loop, with Stripe at
    the session's front; the books must pass the audit after the test."""
    listener = _loopback_listener()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings = stripe_settings(stripe_front.api_base).model_copy(
        update={
            "database_url": database_url,
            "public_url": url,
            "welcome_bonus_tokens": 0,
            "hold_sweep_interval_seconds": 0,
            # Stripe.js lives on js.stripe.com, which nothing here may reach: the card
            # form says it is unavailable, as it would offline.
            "stripe_js_url": "",
        }
    )
    app = create_app(settings)
    config = uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    # A webhook of this server's own: localstripe posts its events a second late, by
    # name, and a late one must not reach the next test's server.
    webhook = f"web-{listener.getsockname()[1]}"
    try:
        await _until_started(server, task)
        stripe_front.configure_webhook(f"{url}/api/stripe/webhook", WEBHOOK_SECRET, name=webhook)
        services: Services = app.state.services
        yield LiveServer(url=url, services=services, stripe=stripe_front)
        assert (await services.tokens.audit()).ok
    finally:
        stripe_front.remove_webhook(webhook)
        server.should_exit = True
        await asyncio.wait_for(task, SERVER_STOP_TIMEOUT_S)
        listener.close()
