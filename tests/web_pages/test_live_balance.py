"""/tokens/events: the balance as server-sent events, at once and again after each
change, over a real HTTP connection (uvicorn on loopback: httpx's ASGI transport
waits for a whole answer, and this one is meant never to end by itself); and the
stream's timing (keep-alives, its lifetime, a client that left) with short clocks."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from tests.web_pages.conftest import Site
from tokenbank.ledger.pages import UserPages
from tokenbank.web import auth
from tokenbank.web.auth import SESSION_COOKIE
from tokenbank.web.live import KEEPALIVE, StreamTiming, balance_events

LINE_TIMEOUT_S = 5.0
MAX_LINES = 40


@pytest.fixture
async def served(site: Site) -> AsyncIterator[str]:
    """The site's app served by uvicorn on a loopback port (its services already
    started by the site); the base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(site.app, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            assert not task.done(), "uvicorn stopped while starting"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        listener.close()


async def next_event(lines: AsyncIterator[str], name: str = "balance") -> Any:
    """The data of the next event called ``name``, reading a bounded number of lines."""
    event = None
    for _ in range(MAX_LINES):
        line = await asyncio.wait_for(anext(lines), LINE_TIMEOUT_S)
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == name:
            return json.loads(line.removeprefix("data: "))
    raise AssertionError(f"no {name} event in {MAX_LINES} lines")


async def test_the_stream_sends_the_balance_then_each_change(site: Site, served: str) -> None:
    await site.tokens.credit("alice", amount=1_000, operation_type="purchase")
    await site.tokens.credit("alice", amount=500, operation_type="bonus")
    cookies = {SESSION_COOKIE: site.alice.cookies[SESSION_COOKIE]}
    async with (
        httpx.AsyncClient(base_url=served, cookies=cookies) as client,
        client.stream("GET", "/tokens/events") as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["cache-control"] == "no-store"
        lines = answer.aiter_lines()

        first = await next_event(lines)
        await site.tokens.debit("alice", amount=200)
        second = await next_event(lines)
        hold = await site.tokens.hold("alice", amount=300)
        third = await next_event(lines)

    assert first == {
        "balance": 1_500,
        "available": 1_500,
        "held": 0,
        "paidTokens": 1_000,
        "promotionalTokens": 500,
    }
    # Promotional tokens are spent first (decision 13).
    assert second == {
        "balance": 1_300,
        "available": 1_300,
        "held": 0,
        "paidTokens": 1_000,
        "promotionalTokens": 300,
    }
    assert (third["balance"], third["available"], third["held"]) == (1_300, 1_000, 300)
    assert hold.success


async def test_the_stream_sends_a_new_alert_with_the_balance_that_caused_it(
    site: Site, served: str
) -> None:
    await site.tokens.credit("alice", amount=1_500, operation_type="purchase")
    cookies = {SESSION_COOKIE: site.alice.cookies[SESSION_COOKIE]}
    async with (
        httpx.AsyncClient(base_url=served, cookies=cookies) as client,
        client.stream("GET", "/tokens/events") as answer,
    ):
        lines = answer.aiter_lines()
        assert (await next_event(lines))["balance"] == 1_500
        await site.tokens.debit("alice", amount=600)  # below the low level (1,000)
        assert (await next_event(lines))["balance"] == 900
        alerts = await next_event(lines, "alerts")
    assert [alert["type"] for alert in alerts] == ["balance.low"]
    assert alerts[0]["text"] == "Your balance went below the low-balance level."


async def test_signing_out_ends_an_open_stream(
    site: Site, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "SESSION_RECHECK_SECONDS", 0.2)
    await site.tokens.credit("alice", amount=1_000, operation_type="purchase")
    token = site.alice.cookies[SESSION_COOKIE]
    async with (
        httpx.AsyncClient(base_url=served, cookies={SESSION_COOKIE: token}) as client,
        client.stream("GET", "/tokens/events") as answer,
    ):
        lines = answer.aiter_lines()
        assert (await next_event(lines))["balance"] == 1_000
        await site.services.accounts.end_session(token)
        rest = [line async for line in _until_the_end(lines)]
    # No balance event after the sign-out, and the stream ended by itself.
    assert not any(line.startswith("data: ") for line in rest)


async def _until_the_end(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    for _ in range(MAX_LINES):
        try:
            yield await asyncio.wait_for(anext(lines), LINE_TIMEOUT_S)
        except StopAsyncIteration:
            return
    raise AssertionError("the stream went on after the sign-out")


async def never() -> bool:
    return False


async def collect(stream: AsyncIterator[str], limit: int = 200) -> list[str]:
    parts = []
    async for part in stream:
        parts.append(part)
        assert len(parts) < limit, "the stream did not end"
    return parts


async def test_a_quiet_stream_keeps_alive_and_ends_after_its_lifetime(site: Site) -> None:
    await site.tokens.credit("alice", amount=10, operation_type="bonus")
    timing = StreamTiming(poll=0.01, keepalive=0.05, lifetime=0.3)

    parts = await asyncio.wait_for(
        collect(balance_events(UserPages(site.tokens), "alice", disconnected=never, timing=timing)),
        5,
    )

    assert parts[0] == "retry: 2000\n\n"
    assert parts[1].startswith("event: balance\ndata: ") and '"balance": 10' in parts[1]
    assert [part for part in parts[2:] if part != KEEPALIVE] == []  # nothing changed
    assert 2 <= parts.count(KEEPALIVE) <= 7


async def test_the_stream_stops_when_the_client_leaves(site: Site) -> None:
    await site.tokens.credit("alice", amount=10, operation_type="bonus")
    calls = 0

    async def gone_after_two_polls() -> bool:
        nonlocal calls
        calls += 1
        return calls > 2

    timing = StreamTiming(poll=0.01, keepalive=100, lifetime=100)
    stream = balance_events(
        UserPages(site.tokens), "alice", disconnected=gone_after_two_polls, timing=timing
    )
    parts = await asyncio.wait_for(collect(stream), 5)

    assert len(parts) == 2 and calls == 3


async def test_the_stream_of_an_unknown_wallet_ends(site: Site) -> None:
    stream = balance_events(UserPages(site.tokens), "nobody", disconnected=never)

    assert await asyncio.wait_for(collect(stream), 5) == ["retry: 2000\n\n"]
