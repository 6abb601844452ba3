"""Crash test (issue 6): SIGKILL `tokenbank serve` under load; no token may be made or lost.

A real ``tokenbank serve --workers 2`` runs on a fresh database (a SQLite file, or a
database on a private PostgreSQL); concurrent clients issue random operations, each
with its own idempotency key, and retry it with the same key and body on every
unknown outcome (connection error, timeout, 5xx) until it gets a definitive answer
(2xx or 4xx). A killer SIGKILLs the server's whole process group at random moments
and restarts it on the same database and port. Afterwards, with the server up and
the clients gone, the harness checks:

- ``tokenbank audit`` exits 0;
- once every hold has expired and the server's sweeper (every second) ran, no
  hold is pending;
- every keyed operation answered 2xx left exactly one row in ``idempotency_keys``,
  and no operation answered 4xx (and never 2xx) left one;
- the sum of all wallet balances is what the acknowledged answers say: funding +
  credits + refunds - deducts - captured amounts - token-process end costs
  ("tokens created or lost" = actual - expected, must be 0);
- every outcome was resolved before the deadline.

With ``--servers 2 --job-workers 2`` (PostgreSQL) the topology of a deployment
with several processes runs instead: two ``tokenbank serve`` on different ports and
two ``tokenbank jobs run`` workers over one database. Clients spread over the servers
and retry an unknown outcome on the next one (as a load balancer would); the killer
SIGKILLs any of the four; the plan's users are due for renewal when the workers start,
and some credits expire within seconds, so both workers race over the same renewals
and expiries. Then also:

- every plan user was renewed exactly once (one ``renewal`` credit, one
  ``plan_renewals`` row, of the plan's allocation);
- no token of a grant left twice (each grant's movements add up to its remainder:
  an expired grant may lose its tokens in steps, as the holds that need them
  resolve), and no grant past its expiry still holds tokens;
- the total above counts the renewals' tokens in and the expired tokens out.

With ``--webhooks`` an endpoint of the app hears every event type at a loopback
receiver the harness runs, and the jobs workers deliver to it during the load; then
every event was delivered, the receiver got each id at least once, and each id it
got twice is explained by a killed worker (``crash_webhooks.py`` says how).

Usage::

    python tests/reliability/crash.py --engine sqlite --clients 16 --kills 10 --seconds 60
    python tests/reliability/crash.py --engine postgresql --servers 2 --job-workers 2 \
        --recharges 4 --webhooks

It prints the figures and exits 1 on any violation; ``--json PATH`` also writes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: its sibling module is tests.reliability's
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.reliability import crash_webhooks as hooks
from tokenbank.testing.postgres import PostgresServer

APP = "crash"
USERS = 20
FUNDING = 1_000_000  # per user: no operation below should ever run a wallet dry
FEATURE = "crash-fixed"
FEATURE_TOKENS = 5
PLAN = "crash-plan"
HOLD_TTLS = (2, 3, 4, 5)
# With job workers: the plan's monthly allocation, and how soon expiring credits expire.
ALLOCATION = 1_000
EXPIRY_SECONDS = (1, 2, 3, 4)
# With --recharges: users whose saved card (on a localstripe) buys the Starter pack
# when their available tokens fall below the threshold; deducts drain them.
RECHARGE_FUNDING = 20_000
RECHARGE_THRESHOLD = 10_000
DRAIN_TOKENS = 4_000
DRAIN_SHARE = 0.3  # of deducts
STRIPE_SECRET = "sk_test_crash"
VISA = "4242424242424242"
REQUEST_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 60.0
# After the settle, how long the job workers' sweeps may still take to expire every
# grant past its expiry (the harness loads both cores: a pass can run late).
EXPIRY_WAIT_S = 10.0
# Both engines: the cutoff is bound (now less the grace), in the column's own format.
UNEXPIRED_COUNT_SQL = (
    "SELECT COUNT(*) FROM grants WHERE remaining_tokens > 0 AND expires_at < :cutoff"
)
EXPIRY_GRACE_S = 2.0
RETRY_GRACE_S = 30.0  # how long unknown outcomes are retried after the last kill
MIN_UPTIME_S = 0.3  # the server serves at least this long between kills
# Operations that commit a keyed write: their key must be in idempotency_keys.
KEYED = {"credit", "deduct", "refund", "hold", "capture", "end", "fund"}
WEIGHTS = {
    "open": 1,
    "credit": 2,
    "deduct": 4,
    "refund": 2,
    "hold": 2,
    "capture": 2,
    "void": 1,
    "start": 1,
    "end": 3,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def new_key(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


@dataclass
class Op:
    kind: str
    method: str
    path: str
    body: dict[str, Any] | None
    key: str | None
    status: int | None = None  # the definitive answer's status
    answer: Any = None
    attempts: int = 0
    unknown: int = 0  # attempts with an unknown outcome

    @property
    def acked(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Stats:
    ops: list[Op] = field(default_factory=list)
    kills: int = 0
    retries: int = 0
    unknown_resolved: int = 0
    unresolved: list[Op] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)  # every answer, retries too
    transport_errors: int = 0
    kills_by_target: Counter[str] = field(default_factory=Counter)


class Server:
    """``tokenbank serve --workers 2`` in its own process group; kill -9 and restart."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.env = env
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"serve:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "tokenbank.cli", "serve", "--port", str(self.port),
            "--workers", "2", "--log-level", "warning",
        ]  # fmt: skip

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"tokenbank serve exited:\n{self.log_tail()}")
                try:
                    if (await client.get(f"{self.base_url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"tokenbank serve never became healthy:\n{self.log_tail()}")

    async def start(self) -> None:
        self.spawn()
        await self.wait_healthy()

    def kill(self) -> None:
        """SIGKILL the whole process group (the uvicorn supervisor and its workers)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class JobWorker(Server):
    """``tokenbank jobs run``: renewals at start and every minute, sweeps every second."""

    def __init__(self, env: dict[str, str], number: int, log_path: Path) -> None:
        jobs_env = env | {"TOKENBANK_RENEWAL_CRON": "* * * * *",
                          "TOKENBANK_SWEEP_INTERVAL_SECONDS": "1"}  # fmt: skip
        super().__init__(jobs_env, 0, log_path)
        self.number = number

    @property
    def name(self) -> str:
        return f"jobs:{self.number}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tokenbank.cli", "jobs", "run"]

    async def wait_healthy(self) -> None:
        """A worker serves nothing to ask: alive is all there is to wait for."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"tokenbank jobs run exited:\n{self.log_tail()}")


def _cutoff() -> Any:
    """``:cutoff``: past expiry by more than the grace (the last sweep's)."""
    from sqlalchemy import bindparam

    from tokenbank.db.types import UTCDateTime

    moment = datetime.now(UTC) - timedelta(seconds=EXPIRY_GRACE_S)
    return bindparam("cutoff", moment, type_=UTCDateTime())


class Harness:
    def __init__(self, args: argparse.Namespace, env: dict[str, str], work: Path) -> None:
        self.args = args
        self.env = env
        self.work = work
        self.servers = [
            Server(env, free_port(), work / f"serve-{n}.log") for n in range(args.servers)
        ]
        self.server = self.servers[0]  # setup goes here
        self.workers = [JobWorker(env, n, work / f"jobs-{n}.log") for n in range(args.job_workers)]
        self.stats = Stats()
        self.rng = random.Random(args.seed)
        self.api_key = ""
        self.users = [f"crash-user-{i}" for i in range(USERS)]
        self.deducts: list[tuple[str, int, int]] = []  # (user, ledgerEntryId, amount)
        self.holds: list[tuple[str, str, int]] = []  # (user, holdId, amount): pending
        self.new_users = 0
        self.recharge_users = [f"crash-recharge-{i}" for i in range(args.recharges)]
        # Without job workers nobody renews: the plan allocates nothing, as before.
        self.allocation = ALLOCATION if args.job_workers else 0
        self.issuing = True  # clients start new operations while True
        self.retry_until = float("inf")  # set when the last kill is done
        self.load_ended = 0.0
        self.expiry_wait_s = 0.0  # how long the check waited for the last expiries
        self.receiver: hooks.RunningReceiver | None = None  # with --webhooks
        self.endpoint_id = ""

    # --- plumbing ------------------------------------------------------------------------

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tokenbank.cli", *args]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=False)

    async def run_op(self, client: httpx.AsyncClient, op: Op, home: int = 0) -> Op:
        """Send `op` until it has a definitive answer, the same key and body every time;
        an unknown outcome is retried on the next server (the same one when alone)."""
        self.stats.ops.append(op)
        while True:
            op.attempts += 1
            if op.attempts > 1:
                self.stats.retries += 1
            server = self.servers[(home + op.unknown) % len(self.servers)]
            try:
                response = await client.request(op.method, server.base_url + op.path, json=op.body)
            except httpx.TransportError:
                self.stats.transport_errors += 1
                status = None
            else:
                status = response.status_code
                self.stats.statuses[status] += 1
                if status < 500:
                    op.status = status
                    try:
                        op.answer = response.json()
                    except ValueError:
                        op.answer = response.text
                    if op.unknown:
                        self.stats.unknown_resolved += 1
                    return op
            op.unknown += 1
            if time.monotonic() > self.retry_until:
                self.stats.unresolved.append(op)
                return op
            await asyncio.sleep(self.rng.uniform(0.05, 0.25))

    # --- setup ---------------------------------------------------------------------------

    async def setup(self, client: httpx.AsyncClient) -> None:
        scopes = ["read", "spend", "refund", "credit", "admin"]
        created = self.cli("apps", "create", APP, *[a for s in scopes for a in ("--scope", s)])
        if created.returncode != 0:
            raise RuntimeError(f"apps create failed: {created.stdout}{created.stderr}")
        self.api_key = created.stdout.strip().splitlines()[-1]
        client.headers["Authorization"] = f"Bearer {self.api_key}"
        if self.receiver is not None:
            self.add_endpoint(self.receiver)
        for path, body in (
            ("/api/admin/features", {"id": FEATURE, "name": "Crash fixed", "rule": {
                "type": "fixed", "tokens": FEATURE_TOKENS}}),
            ("/api/admin/plans", {"name": PLAN, "features": [FEATURE],
                                  "monthly_allocation_tokens": self.allocation}),
        ):  # fmt: skip
            response = await client.post(path, json=body)
            if response.status_code not in (200, 201):
                raise RuntimeError(f"{path}: {response.status_code} {response.text}")
        for user in self.users:
            opened = await client.post("/api/users", json={"userId": user})
            if opened.status_code not in (200, 201):
                raise RuntimeError(f"open {user}: {opened.status_code} {opened.text}")
            plan = await client.put(f"/api/admin/users/{user}/plan", json={"plan": PLAN})
            if plan.status_code != 200:
                raise RuntimeError(f"plan {user}: {plan.status_code} {plan.text}")
            key = new_key("fund")
            fund = {"userId": user, "amount": FUNDING, "operationType": "purchase",
                    "referenceId": key}  # fmt: skip
            op = await self.run_op(client, Op("fund", "POST", "/api/tokens/credit", fund, key))
            if not op.acked:
                raise RuntimeError(f"funding {user}: {op.status} {op.answer}")
        if self.recharge_users:
            await self.setup_recharges(client)

    def add_endpoint(self, receiver: hooks.RunningReceiver) -> None:
        """What an operator does: ``tokenbank webhooks add`` for every event type."""
        added = self.cli("webhooks", "add", APP, receiver.url, "--event", "*")
        if added.returncode != 0:
            raise RuntimeError(f"webhooks add failed: {added.stdout}{added.stderr}")
        lines = added.stdout.splitlines()
        self.endpoint_id = lines[0].split()[1]  # "endpoint <id> for <app>: <url>"
        receiver.receiver.secret = lines[-1].rpartition(" ")[2]  # "signing secret: whsec_..."

    async def setup_recharges(self, client: httpx.AsyncClient) -> None:
        """Wallets with a saved card and auto-recharge on (the Starter pack)."""
        seeded = self.cli("packs", "seed-defaults")
        if seeded.returncode != 0:
            raise RuntimeError(f"packs seed-defaults failed: {seeded.stdout}{seeded.stderr}")
        for user in self.recharge_users:
            opened = await client.post("/api/users", json={"userId": user})
            if opened.status_code not in (200, 201):
                raise RuntimeError(f"open {user}: {opened.status_code} {opened.text}")
            key = new_key("fund")
            fund = {"userId": user, "amount": RECHARGE_FUNDING, "operationType": "purchase",
                    "referenceId": key}  # fmt: skip
            op = await self.run_op(client, Op("fund", "POST", "/api/tokens/credit", fund, key))
            if not op.acked:
                raise RuntimeError(f"funding {user}: {op.status} {op.answer}")
        await arm_recharges(self.env, self.recharge_users)

    # --- the load ------------------------------------------------------------------------

    def next_op(self) -> Op:
        rng = self.rng
        kinds = list(WEIGHTS)
        kind = rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
        user = rng.choice(self.users)
        if kind == "refund" and not self.deducts:
            kind = "deduct"
        if kind in ("capture", "void") and not self.holds:
            kind = "hold"
        if kind == "deduct" and self.recharge_users and rng.random() < DRAIN_SHARE:
            return self._drain_op(rng.choice(self.recharge_users), new_key(kind))
        builders: dict[str, Callable[[str, str], Op]] = {
            "open": self._open_op,
            "credit": self._credit_op,
            "deduct": self._deduct_op,
            "refund": self._refund_op,
            "hold": self._hold_op,
            "capture": self._capture_op,
            "void": self._void_op,
            "start": self._start_op,
        }
        return builders.get(kind, self._end_op)(user, new_key(kind))

    # Each builder draws from the seeded generator in the order the load always has, so a
    # seed replays the same run.

    def _open_op(self, user: str, key: str) -> Op:
        self.new_users += 1
        user = f"crash-new-{uuid.uuid4().hex[:12]}"
        return Op("open", "POST", "/api/users", {"userId": user}, None)

    def _credit_op(self, user: str, key: str) -> Op:
        body: dict[str, Any] = {"userId": user, "amount": self.rng.randint(1, 100),
                                "referenceId": key}  # fmt: skip
        if self.workers and self.rng.random() < 0.5:  # a grant the workers must expire
            expires = datetime.now(UTC) + timedelta(seconds=self.rng.choice(EXPIRY_SECONDS))
            body["expiresAt"] = expires.isoformat()
        return Op("credit", "POST", "/api/tokens/credit", body, key)

    def _deduct_op(self, user: str, key: str) -> Op:
        body = {"userId": user, "amount": self.rng.randint(1, 100), "referenceId": key,
                "description": "crash deduct"}  # fmt: skip
        return Op("deduct", "POST", "/api/tokens/deduct", body, key)

    def _drain_op(self, user: str, key: str) -> Op:
        """A deduct that takes a recharge user below the threshold soon."""
        body = {"userId": user, "amount": DRAIN_TOKENS, "referenceId": key,
                "description": "crash drain"}  # fmt: skip
        return Op("deduct", "POST", "/api/tokens/deduct", body, key)

    def _refund_op(self, user: str, key: str) -> Op:
        owner, entry, amount = self.rng.choice(self.deducts)
        body = {"userId": owner, "amount": self.rng.randint(1, amount), "ledgerEntryId": entry,
                "referenceId": key}  # fmt: skip
        return Op("refund", "POST", "/api/tokens/refund", body, key)

    def _hold_op(self, user: str, key: str) -> Op:
        ttl = self.rng.choice(HOLD_TTLS)
        body = {"userId": user, "amount": self.rng.randint(1, 200), "ttlSeconds": ttl,
                "referenceId": key}  # fmt: skip
        return Op("hold", "POST", "/api/tokens/holds", body, key)

    def _void_op(self, user: str, key: str) -> Op:
        _owner, hold_id, _amount = self.holds.pop(self.rng.randrange(len(self.holds)))
        return Op("void", "POST", f"/api/tokens/holds/{hold_id}/void", {}, None)

    def _capture_op(self, user: str, key: str) -> Op:
        _owner, hold_id, amount = self.holds.pop(self.rng.randrange(len(self.holds)))
        body = {"amount": self.rng.randint(0, amount), "referenceId": key}
        return Op("capture", "POST", f"/api/tokens/holds/{hold_id}/capture", body, key)

    def _start_op(self, user: str, key: str) -> Op:
        body = {"user_id": user, "feature_endpoint_id": FEATURE, "request_id": key}
        return Op("start", "POST", "/api/token-process/start", body, key)

    def _end_op(self, user: str, key: str) -> Op:
        body = {"user_id": user, "feature_endpoint_id": FEATURE, "input_token": self.rng.randint(
            0, 500), "output_token": self.rng.randint(1, 500), "request_id": key}  # fmt: skip
        return Op("end", "POST", "/api/token-process/end", body, key)

    def remember(self, op: Op) -> None:
        if not op.acked or not isinstance(op.answer, dict):
            return
        data = op.answer.get("data", {})
        assert op.body is not None
        if op.kind == "deduct":
            self.deducts.append((op.body["userId"], data["ledgerEntryId"], op.body["amount"]))
        elif op.kind == "hold" and data.get("status") == "pending":
            self.holds.append((op.body["userId"], data["holdId"], op.body["amount"]))

    async def client_task(self, home: int) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with httpx.AsyncClient(headers=headers, timeout=REQUEST_TIMEOUT_S) as client:
            while self.issuing:
                op = await self.run_op(client, self.next_op(), home)
                self.remember(op)

    async def killer(self) -> None:
        kills, seconds = self.args.kills, self.args.seconds
        began = time.monotonic()
        up_since = began
        for index in range(kills):
            target = began + (index + self.rng.random()) * seconds / kills
            await asyncio.sleep(max(target, up_since + MIN_UPTIME_S) - time.monotonic())
            victim = self.rng.choice([*self.servers, *self.workers])
            victim.kill()
            self.stats.kills += 1
            self.stats.kills_by_target[victim.name] += 1
            victim.spawn()
            await victim.wait_healthy()
            up_since = time.monotonic()
        await asyncio.sleep(max(0.0, began + seconds - time.monotonic()))
        self.retry_until = time.monotonic() + RETRY_GRACE_S
        self.issuing = False

    # --- the checks ----------------------------------------------------------------------

    def expected_total(self) -> int:
        total = 0
        for op in self.stats.ops:
            if not op.acked:
                continue
            assert op.body is not None
            data = op.answer.get("data", {}) if isinstance(op.answer, dict) else {}
            if op.kind in ("fund", "credit", "refund"):
                total += op.body["amount"]
            elif op.kind == "deduct":
                total -= op.body["amount"]
            elif op.kind == "capture":
                total -= data["capturedAmount"]
            elif op.kind == "end":
                total -= data["cost"]
        return total

    async def database_facts(self) -> tuple[Counter[str], int, int]:
        from sqlalchemy import text

        from tokenbank.config import Settings
        from tokenbank.db.engine import create_engine

        url = self.env["TOKENBANK_DATABASE_URL"]
        engine = create_engine(url, Settings(database_url=url))
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT key FROM idempotency_keys WHERE scope = :scope"), {"scope": APP}
                )
                keys = Counter(row[0] for row in rows)
                total = (
                    await conn.execute(text("SELECT COALESCE(SUM(balance_tokens), 0) FROM wallets"))
                ).scalar_one()
                pending = (
                    await conn.execute(text("SELECT COUNT(*) FROM holds WHERE status = 'pending'"))
                ).scalar_one()
        finally:
            await engine.dispose()
        return keys, int(total), int(pending)

    async def job_facts(self) -> dict[str, Any]:
        """What the once-only jobs did, as the database records it."""
        from sqlalchemy import text

        from tokenbank.config import Settings
        from tokenbank.db.engine import create_engine

        url = self.env["TOKENBANK_DATABASE_URL"]
        engine = create_engine(url, Settings(database_url=url))
        joined = "string_agg" if engine.dialect.name == "postgresql" else "group_concat"
        try:
            async with engine.connect() as conn:
                credits = await conn.execute(text(
                    "SELECT w.user_id, COUNT(*) FROM ledger_transactions t JOIN wallets w"
                    " ON w.id = t.wallet_id WHERE t.operation_type = 'renewal' GROUP BY w.user_id"
                ))  # fmt: skip
                periods = await conn.execute(text(
                    "SELECT w.user_id, COUNT(*), MIN(r.granted_tokens), SUM(r.granted_tokens)"
                    " FROM plan_renewals r JOIN wallets w ON w.id = r.wallet_id GROUP BY w.user_id"
                ))  # fmt: skip
                expiries = await conn.execute(text(
                    "SELECT grant_id, COUNT(*), -SUM(amount_tokens) FROM grant_movements"
                    " WHERE kind = 'expire' GROUP BY grant_id"
                ))  # fmt: skip
                # A grant's own books: what it was given, plus every movement, is what
                # it holds. Tokens expired twice would show here (or break a CHECK).
                unbooked = await conn.execute(text(
                    "SELECT g.id FROM grants g LEFT JOIN grant_movements m ON m.grant_id = g.id"
                    " GROUP BY g.id, g.amount_tokens, g.remaining_tokens"
                    " HAVING g.amount_tokens + COALESCE(SUM(m.amount_tokens), 0)"
                    " <> g.remaining_tokens"
                ))  # fmt: skip
                # Past expiry (with a second's grace for the last sweep) and still holding.
                # Each with its wallet and movements, so that a failure explains itself.
                unexpired = await conn.execute(text(
                    "SELECT g.id, g.remaining_tokens, g.amount_tokens, g.expires_at,"
                    " w.user_id, w.balance_tokens, w.held_tokens, w.next_grant_event_at,"
                    " CURRENT_TIMESTAMP,"
                    f" (SELECT {joined}(m.kind || ' ' || m.amount_tokens || ' at '"
                    "  || m.created_at, '; ')"
                    "  FROM grant_movements m WHERE m.grant_id = g.id)"
                    " FROM grants g JOIN wallets w ON w.id = g.wallet_id"
                    " WHERE g.remaining_tokens > 0 AND g.expires_at < :cutoff"
                ).bindparams(_cutoff()))  # fmt: skip
                expiring = await conn.execute(
                    text("SELECT COUNT(*) FROM grants WHERE expires_at IS NOT NULL")
                )
                recharges = await conn.execute(text(
                    "SELECT status || COALESCE(' (' || error || ')', ''), COUNT(*)"
                    " FROM recharges GROUP BY 1"
                ))  # fmt: skip
                # Each paid auto-recharge purchase, with how many ledger credits name it
                # and the tokens they gave the wallet.
                bought = await conn.execute(text(
                    "SELECT p.id, p.status, p.credit_transaction_id,"
                    " (SELECT COUNT(*) FROM ledger_transactions t"
                    "  WHERE t.id = p.credit_transaction_id"
                    "  AND t.operation_type = 'auto_recharge'),"
                    " (SELECT COALESCE(SUM(e.amount_tokens), 0) FROM ledger_entries e"
                    "  WHERE e.transaction_id = p.credit_transaction_id"
                    "  AND e.wallet_id IS NOT NULL)"
                    " FROM purchases p WHERE p.kind = 'auto_recharge'"
                ))  # fmt: skip
                recharge_credits = await conn.execute(text(
                    "SELECT COUNT(*) FROM ledger_transactions"
                    " WHERE operation_type = 'auto_recharge'"
                ))  # fmt: skip
                return {
                    "renewal_credits": {row[0]: int(row[1]) for row in credits},
                    "renewal_periods": {
                        row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in periods
                    },
                    "expiries": {int(row[0]): (int(row[1]), int(row[2])) for row in expiries},
                    "unbooked": [int(row[0]) for row in unbooked],
                    "recharges": {str(row[0]): int(row[1]) for row in recharges},
                    "recharge_purchases": [tuple(row) for row in bought],
                    "recharge_credits": int(recharge_credits.scalar_one()),
                    "unexpired": [" ".join(str(value) for value in row) for row in unexpired],
                    "expiring_grants": int(expiring.scalar_one()),
                }
        finally:
            await engine.dispose()

    async def wait_expired(self) -> float:
        """Poll until no grant past its expiry (by the check's grace) holds tokens, for
        at most EXPIRY_WAIT_S; the seconds waited."""
        from sqlalchemy import text

        from tokenbank.config import Settings
        from tokenbank.db.engine import create_engine

        url = self.env["TOKENBANK_DATABASE_URL"]
        engine = create_engine(url, Settings(database_url=url))
        began = time.monotonic()
        try:
            while time.monotonic() - began < EXPIRY_WAIT_S:
                async with engine.connect() as conn:
                    unexpired = text(UNEXPIRED_COUNT_SQL).bindparams(_cutoff())
                    left = (await conn.execute(unexpired)).scalar_one()
                if left == 0:
                    break
                await asyncio.sleep(0.25)
        finally:
            await engine.dispose()
        return time.monotonic() - began

    def check_jobs(self, facts: dict[str, Any], violations: list[str]) -> tuple[int, int]:
        """Every once-only job happened once: (tokens renewals and recharges added, tokens
        expired)."""
        credits, periods = facts["renewal_credits"], facts["renewal_periods"]
        for user in self.users:
            count, smallest, _ = periods.get(user, (0, 0, 0))
            if credits.get(user, 0) != 1 or count != 1 or smallest != self.allocation:
                violations.append(
                    f"{user}: {credits.get(user, 0)} renewal credits, {count} renewed periods"
                    f" (of {smallest} tokens); one of {self.allocation} expected"
                )
        strangers = set(credits) - set(self.users)
        if strangers:
            violations.append(f"renewals of users on no plan: {sorted(strangers)[:5]}")
        # An expired grant's remainder may leave in several expiries: what pending holds
        # need stays until they resolve, and a refund may give an expired grant tokens
        # back. Once-only means no token of it leaves twice: its books balance.
        if facts["unbooked"]:
            violations.append(f"grants whose movements miss their remainder: {facts['unbooked']}")
        if facts["unexpired"]:
            # (grant, remaining, amount, expires, user, balance, held, next event, now,
            # movements), and what the job workers logged that went wrong.
            errors = [
                line
                for worker in self.workers
                for line in worker.log_tail(400).splitlines()
                if "ERROR" in line or "Traceback" in line or "failed" in line
            ]
            violations.append(
                f"{len(facts['unexpired'])} grants past expiry still hold tokens:"
                f" {facts['unexpired']}; job worker errors: {errors[-20:]}"
            )
        facts["renewed_tokens"] = sum(total for _, _, total in periods.values())
        facts["recharged_tokens"] = self.check_recharges(facts, violations)
        added = facts["renewed_tokens"] + facts["recharged_tokens"]
        return added, sum(tokens for _, tokens in facts["expiries"].values())

    def check_recharges(self, facts: dict[str, Any], violations: list[str]) -> int:
        """Every paid auto-recharge credited once, nothing credited unpaid; its tokens."""
        purchases = facts["recharge_purchases"]
        paid = [row for row in purchases if row[1] == "paid"]
        for purchase_id, status, _, credits, _ in purchases:
            if credits != (1 if status == "paid" else 0):
                violations.append(f"auto-recharge {purchase_id} ({status}) has {credits} credits")
        if facts["recharge_credits"] != len(paid):
            violations.append(
                f"{facts['recharge_credits']} auto_recharge credits for {len(paid)} paid recharges"
            )
        if facts["recharges"].get("succeeded", 0) != len(paid):  # succeeded has no error
            violations.append(f"recharges {facts['recharges']} but {len(paid)} paid purchases")
        return sum(int(row[4]) for row in paid)

    async def check(self) -> dict[str, Any]:
        violations: list[str] = []
        # Let every hold expire and the server's sweeper (every second) release it;
        # with job workers, let one more of their sweeps (every second) expire grants.
        settle = max(HOLD_TTLS) + (3.5 if self.workers else 1.5)
        await asyncio.sleep(max(0.0, self.load_ended + settle - time.monotonic()))
        # On a loaded 2-core machine a sweep may come late: "on time" is within a few
        # seconds, while a grant nothing ever expires still fails the check below.
        self.expiry_wait_s = await self.wait_expired() if self.workers else 0.0
        drain = (
            await hooks.wait_drained(self.env["TOKENBANK_DATABASE_URL"]) if self.receiver else None
        )
        for worker in self.workers:  # a recharge charged between two reads would skew them
            worker.kill()
        keys, actual, pending = await self.database_facts()
        jobs = await self.job_facts() if self.workers else None
        added_tokens, expired_tokens = (
            self.check_jobs(jobs, violations) if jobs is not None else (0, 0)
        )
        audit = self.cli("audit")
        if audit.returncode != 0:
            violations.append(f"tokenbank audit exited {audit.returncode}: {audit.stdout}")
        if pending:
            violations.append(f"{pending} holds still pending after their ttl and a sweep")
        ops = self.stats.ops
        acked_keys = [op for op in ops if op.kind in KEYED and op.acked]
        refused = [op for op in ops if op.kind in KEYED and op.status is not None and not op.acked]
        missing = [op for op in acked_keys if keys[op.key or ""] != 1]
        leaked = [op for op in refused if keys[op.key or ""] != 0]
        for op in missing[:10]:
            violations.append(
                f"acknowledged {op.kind} {op.key} has {keys[op.key or '']} idempotency rows"
            )
        for op in leaked[:10]:
            violations.append(
                f"{op.kind} {op.key} answered {op.status} {op.answer} yet its key committed"
            )
        for op in self.stats.unresolved[:10]:
            violations.append(f"{op.kind} {op.key} never got a definitive answer")
        expected = self.expected_total() + added_tokens - expired_tokens
        delta = actual - expected
        if delta != 0:
            violations.append(
                f"tokens created or lost: {delta} (actual {actual}, expected {expected})"
            )
        if self.stats.kills < self.args.kills:
            violations.append(f"only {self.stats.kills} kills")
        webhooks = await self.check_webhooks(drain, violations) if drain is not None else None
        server_errors = {s: n for s, n in self.stats.statuses.items() if s >= 500}
        four = Counter(op.status for op in ops if op.status is not None and op.status >= 400)
        return {
            "engine": self.args.engine,
            "clients": self.args.clients,
            "operations_attempted": len(ops),
            "acknowledged": sum(op.acked for op in ops),
            "answered_4xx": sum(four.values()),
            "4xx_by_status": {str(k): v for k, v in sorted(four.items())},
            "by_kind": {
                kind: {
                    "attempted": sum(op.kind == kind for op in ops),
                    "acknowledged": sum(op.kind == kind and op.acked for op in ops),
                }
                for kind in ["fund", *WEIGHTS]
            },
            "kills": self.stats.kills,
            "retries": self.stats.retries,
            "transport_errors": self.stats.transport_errors,
            "5xx_answers": {str(k): v for k, v in sorted(server_errors.items())},
            "unknown_outcomes_resolved": self.stats.unknown_resolved,
            "unresolved": len(self.stats.unresolved),
            "idempotency_rows_checked": len(acked_keys),
            "refused_keys_checked": len(refused),
            "pending_holds": pending,
            "expected_total": expected,
            "actual_total": actual,
            "tokens_created_or_lost": delta,
            "servers": len(self.servers),
            "job_workers": len(self.workers),
            "kills_by_target": dict(sorted(self.stats.kills_by_target.items())),
            "renewals": sum(jobs["renewal_credits"].values()) if jobs else 0,
            "renewed_tokens": jobs["renewed_tokens"] if jobs else 0,
            "recharged_tokens": jobs["recharged_tokens"] if jobs else 0,
            "expiring_grants": jobs["expiring_grants"] if jobs else 0,
            "grants_expired": len(jobs["expiries"]) if jobs else 0,
            "expiry_wait_seconds": round(self.expiry_wait_s, 1),
            "grants_expired_in_steps": (
                sum(count > 1 for count, _ in jobs["expiries"].values()) if jobs else 0
            ),
            "expired_tokens": expired_tokens,
            "recharges": jobs["recharges"] if jobs else {},
            "recharge_purchases_paid": (
                sum(row[1] == "paid" for row in jobs["recharge_purchases"]) if jobs else 0
            ),
            "webhooks": webhooks,
            "violations": violations,
        }

    async def check_webhooks(
        self, drain: tuple[float, int], violations: list[str]
    ) -> dict[str, Any]:
        """Every event delivered (``crash_webhooks.check_deliveries``), with the wait."""
        assert self.receiver is not None
        waited_seconds, pending = drain
        if pending:
            violations.append(f"{pending} events or deliveries still pending after the wait")
        events, deliveries, errors, causes = await hooks.delivery_facts(
            self.env["TOKENBANK_DATABASE_URL"], self.endpoint_id
        )
        worker_kills = sum(
            n for name, n in self.stats.kills_by_target.items() if name.startswith("jobs:")
        )
        hooks.check_causes(events, causes, violations)
        figures = hooks.check_deliveries(
            events, deliveries, self.receiver.receiver, worker_kills, violations
        )
        return {
            **figures,
            "attempt_errors": errors,
            "drain_seconds": round(waited_seconds, 1),
            "worker_kills": worker_kills,
        }

    async def run(self) -> dict[str, Any]:
        began = time.monotonic()
        try:
            for server in self.servers:
                await server.start()
            async with httpx.AsyncClient(
                base_url=self.server.base_url, timeout=REQUEST_TIMEOUT_S
            ) as client:
                await self.setup(client)
            for worker in self.workers:  # together: both race over the due renewals
                worker.spawn()
            load_began = time.monotonic()
            clients = [
                asyncio.create_task(self.client_task(n % len(self.servers)))
                for n in range(self.args.clients)
            ]
            await self.killer()
            await asyncio.gather(*clients)
            self.load_ended = time.monotonic()
            load_seconds = time.monotonic() - load_began
            report = await self.check()
        finally:
            for process in [*self.servers, *self.workers]:
                process.kill()
        report["load_seconds"] = round(load_seconds, 1)
        report["total_seconds"] = round(time.monotonic() - began, 1)
        return report


def print_report(report: dict[str, Any]) -> None:
    print(f"crash test on {report['engine']}: {report['clients']} clients")
    print(f"  operations attempted:      {report['operations_attempted']}")
    print(f"  acknowledged (2xx):        {report['acknowledged']}")
    print(f"  answered 4xx:              {report['answered_4xx']} {report['4xx_by_status']}")
    print(f"  kills:                     {report['kills']}")
    print(f"  retries:                   {report['retries']}")
    print(f"  transport errors:          {report['transport_errors']}")
    print(f"  5xx answers (retried):     {report['5xx_answers']}")
    print(f"  unknown outcomes resolved: {report['unknown_outcomes_resolved']}")
    print(f"  unresolved:                {report['unresolved']}")
    print(f"  keys checked (2xx / 4xx):  {report['idempotency_rows_checked']} / "
          f"{report['refused_keys_checked']}")  # fmt: skip
    print(f"  by kind:                   {report['by_kind']}")
    print(f"  total balance:             {report['actual_total']} (expected "
          f"{report['expected_total']})")  # fmt: skip
    print(f"  tokens created or lost:    {report['tokens_created_or_lost']}")
    if report["job_workers"]:
        print(
            f"  topology:                  {report['servers']} servers, "
            f"{report['job_workers']} job workers; kills {report['kills_by_target']}"
        )
        print(
            f"  renewals (once per user):  {report['renewals']} ({report['renewed_tokens']} tokens)"
        )
        print(
            f"  grants expired:            {report['grants_expired']} of "
            f"{report['expiring_grants']} expiring ({report['expired_tokens']} tokens; "
            f"{report['grants_expired_in_steps']} in steps, as holds resolved; the last"
            f" {report['expiry_wait_seconds']} s after the settle)"
        )
    if report["webhooks"]:
        print_webhooks(report["webhooks"])
    if report["recharges"]:
        print(f"  auto-recharges:            {report['recharges']}, "
              f"{report['recharge_purchases_paid']} paid and credited once "
              f"({report['recharged_tokens']} tokens)")  # fmt: skip
    print(f"  time:                      {report['load_seconds']} s of load, "
          f"{report['total_seconds']} s in all")  # fmt: skip
    for violation in report["violations"]:
        print(f"  VIOLATION: {violation}")
    print("  PASSED" if not report["violations"] else "  FAILED")


def print_webhooks(hooks_report: dict[str, Any]) -> None:
    figures = hooks_report
    duplicates = figures["duplicates"]
    print(f"  webhook events:            {figures['events']}, {figures['delivered']} delivered"
          f" once each to the endpoint {figures['events_by_type']}")  # fmt: skip
    print(f"  webhook attempts:          {figures['claimed_attempts']} claimed, "
          f"{figures['recorded_attempts']} recorded ({figures['lost_claims']} lost with a "
          f"killed worker, {figures['unanswered_attempts']} timed out or failed), "
          f"{figures['requests_received']} received ({figures['unsent_claims']} claims never "
          f"sent), {figures['refused_first_tries']} refused on purpose")  # fmt: skip
    print(f"  webhook attempt errors:    {figures['attempt_errors']}")
    reasons = {k: v for k, v in duplicates.items() if k != "ids"}
    print(f"  webhook duplicates:        {duplicates['ids']} ids received twice or more "
          f"{reasons} ({figures['worker_kills']} jobs worker kills)")  # fmt: skip
    print(f"  webhook lag:               max {figures['max_lag_seconds']} s from commit to "
          f"delivery; all delivered {figures['drain_seconds']} s after the settle")  # fmt: skip


async def arm_recharges(env: dict[str, str], users: list[str]) -> None:
    """What a user does on the billing page: save a card (confirmed as Stripe.js would,
    on the localstripe), then switch auto-recharge on."""
    import requests
    import stripe
    from pydantic import SecretStr

    from tokenbank.config import Settings
    from tokenbank.ledger.service import TokenService
    from tokenbank.payments.gateway import StripeGateway
    from tokenbank.payments.recharge import RechargeService
    from tokenbank.payments.service import PaymentService
    from tokenbank.pricing.service import PricingService

    settings = Settings(
        database_url=env["TOKENBANK_DATABASE_URL"],
        stripe_secret_key=SecretStr(env["TOKENBANK_STRIPE_SECRET_KEY"]),
        stripe_api_base=env["TOKENBANK_STRIPE_API_BASE"],
    )
    # The official SDK on the localstripe, as the page's Stripe.js would use Stripe.
    session = requests.Session()
    session.trust_env = False  # never through a proxy from the environment
    base = env["TOKENBANK_STRIPE_API_BASE"]
    stripe_client = stripe.StripeClient(
        STRIPE_SECRET,
        base_addresses={"api": base},
        http_client=stripe.RequestsClient(session=session, timeout=REQUEST_TIMEOUT_S),
    )
    async with TokenService(settings=settings, auto_migrate=False) as tokens:
        pricing = PricingService(await tokens.engine(), settings=settings, clock=tokens.clock)
        payments = PaymentService(tokens, pricing=pricing, gateway=StripeGateway(settings))
        recharges = RechargeService(payments, tokens)
        try:
            for user in users:
                setup = await recharges.start_card_setup(user)
                method = stripe_client.v1.payment_methods.create(
                    {"type": "card",
                     "card": {"number": VISA, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
                )  # fmt: skip
                confirmed = stripe_client.v1.setup_intents.confirm(
                    setup.setup_intent_id, {"payment_method": method.id}
                )
                await recharges.save_card(user, str(confirmed.payment_method))
                await recharges.configure(
                    user, enabled=True, threshold_tokens=RECHARGE_THRESHOLD, pack_id="starter"
                )
        finally:
            await payments.aclose()


def run_engine(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tokenbank-crash-") as tmp:
        work = Path(tmp)
        env = {key: value for key, value in os.environ.items() if not key.startswith("TOKENBANK_")}
        env |= {
            "TOKENBANK_HOLD_SWEEP_INTERVAL_SECONDS": "1",
            "TOKENBANK_WELCOME_BONUS_TOKENS": "0",
        }
        pg: PostgresServer | None = None
        stripe_server = None
        receiver = hooks.RunningReceiver().start() if args.webhooks else None
        if receiver is not None:
            env |= hooks.WORKER_ENV
        try:
            if args.recharges:
                from tokenbank.testing.localstripe import LocalStripe

                stripe_server = LocalStripe().start()
                env |= {
                    "TOKENBANK_STRIPE_SECRET_KEY": STRIPE_SECRET,
                    "TOKENBANK_STRIPE_API_BASE": stripe_server.api_base,
                    "TOKENBANK_RECHARGE_INTERVAL_SECONDS": "1",
                }
            if args.engine == "postgresql":
                pg = PostgresServer().start()
                pg.create_database("crash")
                env["TOKENBANK_DATABASE_URL"] = pg.async_url("crash")
            else:
                env["TOKENBANK_DATABASE_URL"] = f"sqlite+aiosqlite:///{work / 'crash.db'}"
            harness = Harness(args, env, work)
            harness.receiver = receiver
            try:
                return asyncio.run(harness.run())
            except BaseException:
                print(harness.server.log_tail(), file=sys.stderr)
                raise
        finally:
            if pg is not None:
                pg.stop()
            if stripe_server is not None:
                stripe_server.stop()
            if receiver is not None:
                receiver.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the kill phase")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--servers", type=int, default=1, help="`tokenbank serve` processes")
    parser.add_argument("--job-workers", type=int, default=0, help="`tokenbank jobs run` processes")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--recharges", type=int, default=0,
        help="users with auto-recharge on a localstripe (needs --job-workers)",
    )  # fmt: skip
    parser.add_argument(
        "--webhooks", action="store_true",
        help="an endpoint for every event at a loopback receiver (needs --job-workers)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.servers < 1 or args.job_workers < 0:
        parser.error("--servers must be at least 1 and --job-workers at least 0")
    if args.recharges and not args.job_workers:
        parser.error("--recharges needs --job-workers: the workers charge the recharges")
    if args.webhooks and not args.job_workers:
        parser.error("--webhooks needs --job-workers: the workers deliver the webhooks")
    report = run_engine(args)
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
