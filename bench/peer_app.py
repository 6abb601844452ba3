"""The peer: the deduct service a capable engineer writes in an afternoon.

What tokenbank is measured against in `make bench` (the ``peer`` target): Starlette
routes for ``GET /api/ping``, ``GET /api/tokens/balance/{user}`` and ``POST
/api/tokens/deduct`` with tokenbank's request bodies; a Bearer key checked by
comparing its SHA-256 in constant time; the body read with ``request.json()``; one
statement per deduct (a conditional ``UPDATE ... RETURNING`` feeding an ``INSERT``
of one entry) committed on its own; an asyncpg pool of 16 per worker; ``JSONResponse``
answers. No batching, no idempotency, no double entry: that is the point of it.

Served by the same uvicorn as ``tokenbank serve`` (``--app-dir bench peer_app:app``)
with ``PEER_DATABASE_URL`` and ``PEER_KEY_SHA256`` in the environment. As a script:

    python bench/peer_app.py setup DSN --users N --key KEY   # schema and users
    python bench/peer_app.py audit DSN                        # the books, as the harness reads them
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

POOL_SIZE = 16
START_BALANCE_TOKENS = 1_000_000_000
HOT_USER = "bench-hot"
HOT_USER_BALANCE_TOKENS = 100_000_000_000

DEDUCT = """
WITH debited AS (
    UPDATE peer_wallets SET balance = balance - $2
    WHERE user_id = $1 AND balance >= $2
    RETURNING user_id, balance
)
INSERT INTO peer_entries (user_id, amount, balance_after)
SELECT user_id, -$2, balance FROM debited
RETURNING id, balance_after
"""
BALANCE = "SELECT balance FROM peer_wallets WHERE user_id = $1"
SCHEMA = """
CREATE TABLE peer_wallets (
    user_id text PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance >= 0)
);
CREATE TABLE peer_entries (
    id bigserial PRIMARY KEY,
    user_id text NOT NULL REFERENCES peer_wallets (user_id),
    amount bigint NOT NULL,
    balance_after bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE peer_meta (initial_tokens numeric NOT NULL);
"""

UNAUTHORIZED = JSONResponse({"error": "Invalid API key", "code": "unauthorized"}, 401)
_pool: asyncpg.Pool | None = None


def _key_sha256() -> bytes:
    return bytes.fromhex(os.environ.get("PEER_KEY_SHA256", ""))


def _authorized(request: Request) -> bool:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        return False
    offered = hashlib.sha256(header[7:].encode()).digest()
    return hmac.compare_digest(offered, _key_sha256())


def _db() -> asyncpg.Pool:
    assert _pool is not None, "the pool starts with the app"
    return _pool


async def ping(request: Request) -> JSONResponse:
    if not _authorized(request):
        return UNAUTHORIZED
    return JSONResponse({"data": {"app": "peer", "scopes": ["read", "spend"]}})


async def balance(request: Request) -> JSONResponse:
    if not _authorized(request):
        return UNAUTHORIZED
    user_id = request.path_params["user_id"]
    found = await _db().fetchval(BALANCE, user_id)
    if found is None:
        return JSONResponse({"error": "No wallet for that user", "code": "wallet_not_found"}, 404)
    return JSONResponse(
        {"data": {"userId": user_id, "balance": found, "available": found, "held": 0}}
    )


async def deduct(request: Request) -> JSONResponse:
    if not _authorized(request):
        return UNAUTHORIZED
    try:
        body: Any = await request.json()
    except ValueError:
        return JSONResponse({"error": "The body is not JSON", "code": "invalid_input"}, 400)
    user_id = body.get("userId") if isinstance(body, dict) else None
    amount = body.get("amount") if isinstance(body, dict) else None
    if not isinstance(user_id, str) or type(amount) is not int or amount <= 0:
        return JSONResponse({"error": "userId and amount > 0", "code": "invalid_input"}, 400)
    row = await _db().fetchrow(DEDUCT, user_id, amount)
    if row is None:
        answer = {"error": "Not enough tokens", "code": "insufficient_tokens"}
        return JSONResponse(answer, 402)
    data = {
        "success": True,
        "userId": user_id,
        "amount": amount,
        "newBalance": row["balance_after"],
        "ledgerEntryId": row["id"],
    }
    return JSONResponse({"data": data})


@contextlib.asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    global _pool
    dsn = os.environ["PEER_DATABASE_URL"]
    _pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
    try:
        yield
    finally:
        await _pool.close()


app = Starlette(
    routes=[
        Route("/api/ping", ping),
        Route("/api/tokens/balance/{user_id}", balance),
        Route("/api/tokens/deduct", deduct, methods=["POST"]),
        Route("/healthz", lambda _request: JSONResponse({"status": "ok"})),
    ],
    lifespan=lifespan,
)


# --- setup and audit, for the harness ----------------------------------------------------


async def setup(dsn: str, users: int) -> None:
    """The schema, `users` users and the hot user with large balances."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        await conn.execute(
            "INSERT INTO peer_wallets SELECT 'bench-' || n, $1::bigint"
            " FROM generate_series(0, $2::int - 1) AS n",
            START_BALANCE_TOKENS,
            users,
        )
        await conn.execute(
            "INSERT INTO peer_wallets VALUES ($1, $2)", HOT_USER, HOT_USER_BALANCE_TOKENS
        )
        await conn.execute("INSERT INTO peer_meta SELECT sum(balance) FROM peer_wallets")
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def audit(dsn: str) -> str:
    """The books in `tokenbank audit`'s words (what bench/databases.py reads): every
    token still in a wallet or taken by an entry, and no entry with a wrong balance."""
    conn = await asyncpg.connect(dsn)
    try:
        entries, taken = await conn.fetchrow(
            "SELECT count(*), coalesce(-sum(amount), 0) FROM peer_entries"
        )
        wallets, held = await conn.fetchrow("SELECT count(*), sum(balance) FROM peer_wallets")
        initial = await conn.fetchval("SELECT initial_tokens FROM peer_meta")
    finally:
        await conn.close()
    verdict = "audit passed" if held + taken == initial else "AUDIT FAILED: tokens do not add up"
    return (
        f"{entries} transactions, {entries} entries, {wallets} wallets\n"
        f"system account tokens_consumed: {taken}\n{verdict}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="the peer's setup and audit")
    parser.add_argument("command", choices=("setup", "audit"))
    parser.add_argument("dsn")
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args()
    if args.command == "setup":
        asyncio.run(setup(args.dsn, args.users))
    else:
        print(asyncio.run(audit(args.dsn)), end="")


if __name__ == "__main__":
    main()
