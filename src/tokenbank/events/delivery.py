"""Delivering events to apps' endpoints: fan-out, claim, send, record (decision 15).

One pass of ``tokenbank jobs run`` (every ``TOKENBANK_WEBHOOK_INTERVAL_SECONDS``):

1. **fan out**: events not fanned out yet get one ``pending`` delivery per enabled
   endpoint subscribed to their type (unique per event and endpoint, so a second
   fan-out adds nothing);
2. **claim** due deliveries in a short transaction (``SKIP LOCKED`` on PostgreSQL, one
   writer on SQLite): the attempt count goes up and the delivery is not due again for
   a lease longer than the send may take, so no other worker sends it meanwhile; a
   worker killed mid-send leaves it due again when the lease ends (at least once);
3. **send** outside any transaction: a JSON POST signed per Standard Webhooks by its
   library, ``webhook-id`` being the event's stable id (receivers dedupe on it);
4. **record** each answer under the attempt it claimed (a fencing token): a 2xx is
   delivered; anything else waits the next step of ``TOKENBANK_WEBHOOK_RETRY_SECONDS``
   with jitter, and after the last one the delivery is dead. Every attempt is logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook

from tokenbank.clock import Clock, system_clock
from tokenbank.config import Settings
from tokenbank.db.engine import write_transaction
from tokenbank.db.rows import AnyRow
from tokenbank.events import repository as repo
from tokenbank.events.service import new_delivery
from tokenbank.metrics import record_webhook_delivery

logger = logging.getLogger("tokenbank.events")

FAN_OUT_BATCH = 500
# A claim outlives the send by this much: the send is cut off at the timeout, so the
# lease ends only after the worker has stopped sending (or died).
LEASE_MARGIN_SECONDS = 10.0
JITTER = 0.2
MAX_ERROR_LENGTH = 500
USER_AGENT = "tokenbank-webhooks"


@dataclass(frozen=True, slots=True)
class Answer:
    """What one send came back with."""

    status_code: int | None
    error: str | None
    duration_ms: int
    started_at: datetime

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(slots=True)
class DeliveryPass:
    """What one pass did."""

    fanned_out: int = 0
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    # Seconds from each delivered event's commit to its delivery.
    lags_seconds: list[float] = field(default_factory=list)


def envelope(event_id: str, event_type: str, created_at: datetime, data: Any) -> str:
    """The body every endpoint gets (Standard Webhooks' payload shape, plus the id)."""
    body = {
        "id": event_id,
        "type": event_type,
        "timestamp": created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def signed_headers(secret: str, event_id: str, body: str, moment: datetime) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature for ``body`` sent at ``moment``."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, moment, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class DeliveryService:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        wall_clock: Clock = system_clock,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        # The signature's timestamp is checked against the receiver's own clock, so it
        # is always the real time, whatever clock schedules the retries.
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._timeout_seconds = settings.webhook_timeout_seconds
        self._batch_limit = settings.webhook_batch_limit
        self._retry_seconds = list(settings.webhook_retry_seconds)
        self._transport = transport

    async def run_pass(self) -> DeliveryPass:
        """Fan out new events, then send what is due."""
        result = DeliveryPass(fanned_out=await self.fan_out())
        claimed = await self.claim()
        result.claimed = len(claimed)
        if claimed:
            async with self._client() as client:
                await asyncio.gather(*(self._deliver(client, row, result) for row in claimed))
        return result

    async def _deliver(
        self, client: httpx.AsyncClient, delivery: AnyRow, result: DeliveryPass
    ) -> None:
        # Each answer is recorded as soon as it comes: a receiver that hangs until the
        # timeout delays no other endpoint's record (nor its measured lag).
        answer = await self._send(client, delivery)
        await self.record([delivery], [answer], result)

    async def fan_out(self) -> int:
        """Make the deliveries of events not fanned out yet; how many events."""
        async with write_transaction(self._engine) as conn:
            events = await repo.claim_unfanned_events(conn, FAN_OUT_BATCH)
            if not events:
                return 0
            now = self._clock()
            endpoints = await repo.enabled_endpoints(conn)
            rows = [
                new_delivery(event.id, endpoint.id, now)
                for event in events
                for endpoint in endpoints
                if hears(endpoint, event)
            ]
            await repo.insert_deliveries(conn, rows)
            await repo.mark_fanned_out(conn, [event.id for event in events], now)
        return len(events)

    async def claim(self) -> list[AnyRow]:
        now = self._clock()
        lease = timedelta(seconds=self._timeout_seconds + LEASE_MARGIN_SECONDS)
        async with write_transaction(self._engine) as conn:
            return await repo.claim_deliveries(conn, self._batch_limit, now, now + lease)

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self._transport, follow_redirects=False, trust_env=False)

    async def send(self, claimed: list[AnyRow]) -> list[Answer]:
        """Send claimed deliveries, concurrently, and answer what came back (recorded by
        ``record``; ``run_pass`` records each as it comes)."""
        async with self._client() as client:
            return list(await asyncio.gather(*(self._send(client, row) for row in claimed)))

    async def _send(self, client: httpx.AsyncClient, delivery: AnyRow) -> Answer:
        body = envelope(
            delivery.event_id, delivery.type, delivery.event_created_at, delivery.payload
        )
        headers = signed_headers(delivery.secret, delivery.event_id, body, self._wall_clock())
        started_at, started = self._clock(), time.monotonic()
        try:
            # The whole exchange is cut off at the timeout (httpx's own is per read),
            # which keeps the send inside its claim's lease.
            async with asyncio.timeout(self._timeout_seconds):
                response = await client.post(
                    delivery.url,
                    content=body.encode(),
                    headers=headers,
                    timeout=self._timeout_seconds,
                )
            status, error = (
                response.status_code,
                None if response.is_success else f"HTTP {response.status_code}",
            )
        except (TimeoutError, httpx.TimeoutException):
            status, error = None, f"timed out after {self._timeout_seconds:g} s"
        except httpx.HTTPError as failure:
            status, error = None, f"{type(failure).__name__}: {failure}"[:MAX_ERROR_LENGTH]
        duration_ms = int((time.monotonic() - started) * 1000)
        return Answer(status, error, duration_ms, started_at)

    async def record(
        self, claimed: list[AnyRow], answers: list[Answer], result: DeliveryPass
    ) -> None:
        now = self._clock()
        counted = len(result.lags_seconds)
        measured: list[tuple[str, Answer]] = []
        async with write_transaction(self._engine) as conn:
            for delivery, answer in zip(claimed, answers, strict=True):
                outcome = self._outcome(delivery.attempts, answer, now)
                log = {
                    "started_at": answer.started_at,
                    "duration_ms": answer.duration_ms,
                    "status_code": answer.status_code,
                    "error": answer.error,
                }
                recorded = await repo.record_attempt(
                    conn, delivery.id, delivery.attempts, outcome, log
                )
                if recorded:
                    _count(result, outcome["status"], delivery, now)
                    measured.append((outcome["status"], answer))
        # Counted once the outcomes are committed (a rolled-back record counts nothing).
        lags = iter(result.lags_seconds[counted:])
        for status, answer in measured:
            lag = next(lags) if status == "delivered" else None
            record_webhook_delivery(_metric_outcome(status, answer), lag)

    def _outcome(self, attempt: int, answer: Answer, now: datetime) -> dict[str, Any]:
        values: dict[str, Any] = {
            "last_status_code": answer.status_code,
            "last_error": answer.error,
            "updated_at": now,
        }
        if answer.delivered:
            return {**values, "status": "delivered", "delivered_at": now, "next_attempt_at": None}
        if attempt > len(self._retry_seconds):
            return {**values, "status": "dead", "next_attempt_at": None}
        wait = self._retry_seconds[attempt - 1] * self._rng.uniform(1 - JITTER, 1 + JITTER)
        return {**values, "status": "pending", "next_attempt_at": now + timedelta(seconds=wait)}


def _metric_outcome(status: str, answer: Answer) -> str:
    """The metrics' words for an attempt (tokenbank.metrics.WEBHOOK_OUTCOMES)."""
    if status == "delivered":
        return "delivered"
    if status == "dead":
        return "dead_lettered"
    timed_out = answer.error is not None and "Timeout" in answer.error
    return "timeout" if timed_out else "failed"


def hears(endpoint: AnyRow, event: AnyRow) -> bool:
    """Whether ``endpoint`` gets ``event``: it subscribes to the type, and the event
    is for every app (a user's wallet, which all apps share) or for its own app."""
    if event.type not in endpoint.event_types:
        return False
    return event.app_id is None or event.app_id == endpoint.app_id


def _count(result: DeliveryPass, status: str, delivery: AnyRow, now: datetime) -> None:
    if status == "delivered":
        result.delivered += 1
        result.lags_seconds.append((now - delivery.event_created_at).total_seconds())
    elif status == "dead":
        result.dead += 1
    else:
        result.retrying += 1


def summary(result: DeliveryPass) -> str:
    lag = max(result.lags_seconds, default=0.0)
    return (
        f"{result.fanned_out} events fanned out, {result.claimed} sent: {result.delivered}"
        f" delivered (max lag {lag:.1f} s), {result.retrying} to retry, {result.dead} dead"
    )
