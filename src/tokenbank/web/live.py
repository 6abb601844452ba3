"""The live balance: server-sent events for a signed-in user's page.

The stream polls the wallet's row (balance and held, one indexed read) every half
second and sends ``event: balance`` only when either changed; then it reads the
whole balance (paid and promotional too) once. Polling costs one cheap read per open
page and needs nothing from the write path: no notification channel that SQLite
lacks, no hook that a second API process would miss. A comment line every 15 s keeps
proxies from closing a quiet stream; after 10 minutes the stream ends and the
browser's EventSource reconnects by itself (so no stream lives forever on a server
that is being redeployed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from tokenbank.events.service import Alert
from tokenbank.ledger.pages import UserPages
from tokenbank.ledger.results import BalanceInfo

logger = logging.getLogger("tokenbank.web")

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
STREAM_SECONDS = 600.0
# How long the browser waits before reconnecting after the stream ends.
RETRY_MILLISECONDS = 2_000
KEEPALIVE = ": keep-alive\n\n"
# How often the stream looks for new alerts when the balance has not moved (a
# suspension, say); a balance that moved is looked at at once.
ALERTS_SECONDS = 5.0

AlertSource = Callable[[], Awaitable[list[Alert]]]


@dataclass(frozen=True, slots=True)
class StreamTiming:
    poll: float = POLL_SECONDS
    keepalive: float = KEEPALIVE_SECONDS
    lifetime: float = STREAM_SECONDS
    alerts: float = ALERTS_SECONDS


@dataclass(slots=True)
class AlertWatch:
    """Whether the user's recent alerts (the events written for their wallet) changed
    since the stream last sent them."""

    source: AlertSource | None
    every_seconds: float
    monotonic: Callable[[], float]
    newest: tuple[str, datetime] | None = None
    checked_at: float | None = None

    async def news(self, *, balance_moved: bool) -> str | None:
        """``event: alerts`` with the latest alerts when they changed, else None."""
        if self.source is None:
            return None
        now = self.monotonic()
        recent = self.checked_at is not None and now - self.checked_at < self.every_seconds
        if recent and not balance_moved:
            return None
        self.checked_at = now
        found = await self.source()
        newest = (found[0].type, found[0].created_at) if found else None
        if newest is None or newest == self.newest:
            return None
        self.newest = newest
        return f"event: alerts\ndata: {json.dumps([alert_json(alert) for alert in found])}\n\n"


def alert_json(alert: Alert) -> dict[str, str]:
    """What the pages show of an alert (live-balance.js reads these names)."""
    return {
        "type": alert.type,
        "text": alert.text,
        "createdAt": alert.created_at.isoformat(),
        "shownAt": alert.created_at.strftime("%Y-%m-%d %H:%M"),
    }


def balance_json(info: BalanceInfo) -> dict[str, int]:
    """What the pages show of a balance (live-balance.js reads these names)."""
    return {
        "balance": info.tokens_balance,
        "available": info.available,
        "held": info.held,
        "paidTokens": info.paid_tokens,
        "promotionalTokens": info.promotional_tokens,
    }


def balance_event(info: BalanceInfo) -> str:
    return f"event: balance\ndata: {json.dumps(balance_json(info))}\n\n"


async def balance_events(
    pages: UserPages,
    user_id: str,
    *,
    disconnected: Callable[[], Awaitable[bool]],
    alerts: AlertSource | None = None,
    timing: StreamTiming = StreamTiming(),
    monotonic: Callable[[], float] = time.monotonic,
) -> AsyncIterator[str]:
    """The stream's text: the balance at once, again on each change, the user's
    recent alerts (``event: alerts``) when a new one is written, a keep-alive comment
    when quiet; it ends when the client goes, the wallet is gone, the database fails
    (the browser retries) or ``timing.lifetime`` has passed."""
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    started = last_sent = monotonic()
    shown: tuple[int, int] | None = None
    watch = AlertWatch(alerts, timing.alerts, monotonic)
    try:
        while monotonic() - started < timing.lifetime and not await disconnected():
            figures = await pages.figures(user_id)
            if figures is None:
                return
            moved = figures != shown
            if moved:
                info = await pages.tokens.get_balance(user_id)
                if info is None:
                    return
                shown = (info.tokens_balance, info.held)
                last_sent = monotonic()
                yield balance_event(info)
            news = await watch.news(balance_moved=moved)
            if news is not None:
                last_sent = monotonic()
                yield news
            elif monotonic() - last_sent >= timing.keepalive:
                last_sent = monotonic()
                yield KEEPALIVE
            await asyncio.sleep(timing.poll)
    except (SQLAlchemyError, OSError):
        # The page keeps its last figures; EventSource reconnects after the retry.
        logger.warning("balance stream for %s ended: the database failed", user_id)
