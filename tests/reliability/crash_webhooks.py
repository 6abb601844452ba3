"""Webhook deliveries in the many-process crash test (``crash.py --webhooks``).

The crash test adds, before the load, an endpoint subscribed to every event type
("*") for its app, pointing at the loopback receiver below; the jobs workers deliver
to it during the load (short webhook settings) and are SIGKILLed like the rest.
Afterwards, with the workers still running, the harness waits (bounded) until no
event is left to fan out and no delivery is pending, stops the workers and checks:

- every row of ``events`` has exactly one delivery to the endpoint, ``delivered``;
- each once-only job made one event: as many ``renewal.completed``,
  ``grant.expired``, ``hold.expired`` and ``auto_recharge.*`` events as the rows
  whose change causes them;
- the receiver accepted every event id at least once, and saw no id that is not in
  ``events``; every request's signature verified (the SDK's ``verify_webhook``);
- no delivery was sent more often than it was claimed (a claim is one attempt: two
  workers never send one attempt);
- an id accepted more than once is explained: its delivery has a claimed attempt
  that was never recorded (the worker holding it was killed, so it went out again
  when the claim's lease ended: at least once), or an attempt recorded as a timeout
  or transport error although the receiver answered it. A duplicate with neither
  (or with only a lost claim while no jobs worker was killed) is a violation.

The receiver answers 204 after 0.2 s, except the first try of every fifth event id
(by CRC-32 of the id) which gets a 500, so retries happen under the kills too.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tokenbank.client import InvalidWebhookError, verify_webhook

# The jobs workers' webhook settings: deliveries within the run, retries in seconds.
WORKER_ENV = {
    "TOKENBANK_WEBHOOK_INTERVAL_SECONDS": "0.2",
    # The claim's lease is this + 10 s: a delivery whose worker was killed mid-send
    # goes out again that long after its claim.
    "TOKENBANK_WEBHOOK_TIMEOUT_SECONDS": "3",
    "TOKENBANK_WEBHOOK_RETRY_SECONDS": "[0.5, 1, 1, 2, 2, 2, 2, 2]",
}
FAIL_EVERY = 5  # the first try of every FAIL_EVERY-th event id gets a 500
# Each answer takes this long (the server is threaded: answers overlap), so that a kill
# of a jobs worker more often lands while it waits on a send.
ANSWER_SECONDS = 0.2
DRAIN_TIMEOUT_S = 60.0  # how long the workers get to deliver everything after the load
EXAMPLES = 5  # ids quoted per violation


def fails_first_try(event_id: str) -> bool:
    return zlib.crc32(event_id.encode()) % FAIL_EVERY == 0


@dataclass
class Receiver:
    """What the loopback receiver saw: requests, accepted ids, bad signatures."""

    secret: str = ""
    tries: Counter[str] = field(default_factory=Counter)  # requests per webhook-id
    accepted: Counter[str] = field(default_factory=Counter)  # 2xx answers per webhook-id
    refused: int = 0  # the forced 500s
    bad_signatures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, body: bytes, headers: dict[str, str]) -> int:
        event_id = headers.get("webhook-id", "")
        time.sleep(ANSWER_SECONDS)
        try:
            verify_webhook(body, headers, self.secret)
        except (InvalidWebhookError, ValueError) as failure:
            with self.lock:
                self.bad_signatures.append(f"{event_id}: {failure}")
            return 400
        with self.lock:
            self.tries[event_id] += 1
            if self.tries[event_id] == 1 and fails_first_try(event_id):
                self.refused += 1
                return 500
            self.accepted[event_id] += 1
        return 204


class _Handler(BaseHTTPRequestHandler):
    receiver: Receiver  # set on the subclass each RunningReceiver makes

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {key.lower(): value for key, value in self.headers.items()}
        status = self.receiver.answer(body, headers)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: hundreds of deliveries would flood the report."""


class _Server(ThreadingHTTPServer):
    # A pass sends up to TOKENBANK_WEBHOOK_BATCH_LIMIT (50) deliveries at once: with
    # socketserver's backlog of 5, connections beyond it wait for SYN retries and time
    # out without ever reaching the receiver.
    request_queue_size = 128


class RunningReceiver:
    """A threaded ``http.server`` on a loopback port, recording into ``receiver``."""

    def __init__(self) -> None:
        self.receiver = Receiver()
        handler = type("CrashReceiverHandler", (_Handler,), {"receiver": self.receiver})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> RunningReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# --- the database's side -------------------------------------------------------------------

PENDING_SQL = (
    "SELECT (SELECT COUNT(*) FROM events WHERE fanned_out_at IS NULL)"
    " + (SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending')"
)
EVENTS_SQL = "SELECT id, type, created_at FROM events"
# The rows whose change makes each once-only job's event (migration 0013's triggers):
# as many events of the type as rows, or an event was lost or doubled at its source.
CAUSES_SQL = {
    "renewal.completed": "SELECT COUNT(*) FROM plan_renewals",
    "grant.expired": "SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'expiry'",
    "hold.expired": "SELECT COUNT(*) FROM holds WHERE status = 'expired'",
    "auto_recharge.succeeded": "SELECT COUNT(*) FROM recharges WHERE status = 'succeeded'",
    "auto_recharge.failed": "SELECT COUNT(*) FROM recharges WHERE status = 'failed'",
}
# What the failed attempts came back with (the refused first tries: HTTP 500).
ERRORS_SQL = "SELECT error, COUNT(*) FROM webhook_attempts WHERE error IS NOT NULL GROUP BY error"
# Each delivery to the endpoint with its attempts as claimed, as recorded, and how
# many recorded attempts got no answer (timed out or failed on the way).
DELIVERIES_SQL = (
    "SELECT d.event_id, d.status, d.attempts, d.delivered_at,"
    " (SELECT COUNT(*) FROM webhook_attempts a WHERE a.delivery_id = d.id),"
    " (SELECT COUNT(*) FROM webhook_attempts a WHERE a.delivery_id = d.id"
    "  AND a.status_code IS NULL)"
    " FROM webhook_deliveries d WHERE d.endpoint_id = :endpoint"
)


@dataclass(frozen=True, slots=True)
class Delivery:
    status: str
    claims: int
    recorded: int
    unanswered: int
    lag_seconds: float | None
    rows: int = 1  # delivery rows for this event and endpoint (a unique constraint says 1)


async def wait_drained(url: str, timeout_s: float = DRAIN_TIMEOUT_S) -> tuple[float, int]:
    """Poll until nothing is left to fan out or deliver: (seconds waited, still pending)."""
    from sqlalchemy import text

    from tokenbank.config import Settings
    from tokenbank.db.engine import create_engine

    began = time.monotonic()
    engine = create_engine(url, Settings(database_url=url))
    try:
        while True:
            async with engine.connect() as conn:
                pending = int((await conn.execute(text(PENDING_SQL))).scalar_one())
            if pending == 0 or time.monotonic() - began > timeout_s:
                return time.monotonic() - began, pending
            await asyncio.sleep(0.25)
    finally:
        await engine.dispose()


async def delivery_facts(
    url: str, endpoint_id: str
) -> tuple[dict[str, str], dict[str, Delivery], dict[str, int], dict[str, int]]:
    """(event id -> type, event id -> its delivery to the endpoint, attempt errors,
    event type -> rows that caused one)."""
    from sqlalchemy import text

    from tokenbank.config import Settings
    from tokenbank.db.engine import create_engine

    engine = create_engine(url, Settings(database_url=url))
    try:
        async with engine.connect() as conn:
            events = (await conn.execute(text(EVENTS_SQL))).all()
            rows = (await conn.execute(text(DELIVERIES_SQL), {"endpoint": endpoint_id})).all()
            errors = {str(row[0])[:80]: int(row[1]) for row in await conn.execute(text(ERRORS_SQL))}
            causes = {
                kind: int((await conn.execute(text(sql))).scalar_one())
                for kind, sql in CAUSES_SQL.items()
            }
    finally:
        await engine.dispose()
    created = {str(row[0]): _moment(row[2]) for row in events}
    rows_per_event = Counter(str(row[0]) for row in rows)
    deliveries = {
        str(row[0]): Delivery(
            status=str(row[1]),
            claims=int(row[2]),
            recorded=int(row[4]),
            unanswered=int(row[5]),
            lag_seconds=(
                (_moment(row[3]) - created[str(row[0])]).total_seconds()
                if row[3] is not None and str(row[0]) in created
                else None
            ),
            rows=rows_per_event[str(row[0])],
        )
        for row in rows
    }
    return {str(row[0]): str(row[1]) for row in events}, deliveries, errors, causes


def _moment(value: Any) -> datetime:
    """A timestamp read by a text() query: a datetime on PostgreSQL, text on SQLite
    (naive UTC, as tokenbank stores it there)."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


# --- the checks ----------------------------------------------------------------------------


def _examples(ids: list[str] | set[str]) -> str:
    return ", ".join(sorted(ids)[:EXAMPLES])


def check_deliveries(
    events: dict[str, str],
    deliveries: dict[str, Delivery],
    receiver: Receiver,
    worker_kills: int,
    violations: list[str],
) -> dict[str, Any]:
    """Every event delivered once as the database says, and at least once as the
    receiver says; duplicates explained. The figures for the report."""
    undelivered = {i for i in events if getattr(deliveries.get(i), "status", "") != "delivered"}
    if undelivered:
        violations.append(
            f"{len(undelivered)} events without a delivered delivery: {_examples(undelivered)}"
        )
    doubled = {i for i, d in deliveries.items() if d.rows != 1}
    if doubled:
        violations.append(f"{len(doubled)} events with several deliveries: {_examples(doubled)}")
    unseen = set(events) - set(receiver.accepted)
    if unseen:
        violations.append(f"{len(unseen)} events the receiver never accepted: {_examples(unseen)}")
    strangers = set(receiver.tries) - set(events)
    if strangers:
        violations.append(
            f"{len(strangers)} ids received but not in events: {_examples(strangers)}"
        )
    if receiver.bad_signatures:
        violations.append(
            f"{len(receiver.bad_signatures)} bad signatures: {receiver.bad_signatures[:EXAMPLES]}"
        )
    oversent = {
        i for i, n in receiver.tries.items() if i in deliveries and n > deliveries[i].claims
    }
    if oversent:
        violations.append(
            f"{len(oversent)} events sent more often than claimed: {_examples(oversent)}"
        )
    duplicates = _explain_duplicates(deliveries, receiver, worker_kills, violations)
    lags = [d.lag_seconds for d in deliveries.values() if d.lag_seconds is not None]
    return {
        "events": len(events),
        "events_by_type": dict(sorted(Counter(events.values()).items())),
        "delivered": sum(d.status == "delivered" for d in deliveries.values()),
        "claimed_attempts": sum(d.claims for d in deliveries.values()),
        "recorded_attempts": sum(d.recorded for d in deliveries.values()),
        "lost_claims": sum(d.claims - d.recorded for d in deliveries.values()),
        # Claims no request reached the receiver for: the worker died before sending
        # (or the connection failed, then recorded as unanswered).
        "unsent_claims": sum(max(0, d.claims - receiver.tries[i]) for i, d in deliveries.items()),
        "unanswered_attempts": sum(d.unanswered for d in deliveries.values()),
        "requests_received": sum(receiver.tries.values()),
        "refused_first_tries": receiver.refused,
        "duplicates": duplicates,
        "max_lag_seconds": round(max(lags, default=0.0), 2),
    }


def check_causes(events: dict[str, str], causes: dict[str, int], violations: list[str]) -> None:
    """One event per once-only job done: renewals, expiries, hold expiries, recharges."""
    made = Counter(events.values())
    for kind, rows in causes.items():
        if made[kind] != rows:
            violations.append(f"{made[kind]} {kind} events for {rows} rows that cause one")


def _explain_duplicates(
    deliveries: dict[str, Delivery],
    receiver: Receiver,
    worker_kills: int,
    violations: list[str],
) -> dict[str, int]:
    """Ids accepted more than once, by why: a claim lost with a killed worker, or an
    attempt the sender gave up on though the receiver answered it."""
    reasons: Counter[str] = Counter()
    unexplained: set[str] = set()
    for event_id, count in receiver.accepted.items():
        delivery = deliveries.get(event_id)
        if count < 2 or delivery is None:
            continue
        if delivery.claims > delivery.recorded and worker_kills:
            reasons["after_a_killed_worker"] += 1
        elif delivery.unanswered:
            reasons["after_a_timed_out_attempt"] += 1
        else:
            unexplained.add(event_id)
    if unexplained:
        violations.append(
            f"{len(unexplained)} events accepted more than once without a killed worker or"
            f" a timed-out attempt: {_examples(unexplained)}"
        )
    return {"ids": sum(n > 1 for n in receiver.accepted.values()), **reasons,
            "unexplained": len(unexplained)}  # fmt: skip
