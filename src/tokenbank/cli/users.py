"""``tokenbank users``: open wallets, set their status and plan, mint user JWTs."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from tokenbank.accounts import user_tokens
from tokenbank.apps.service import parse_duration_seconds
from tokenbank.cli._common import DatabaseUrl, group, run, with_plans, with_service
from tokenbank.cli._errors import BAD_INPUT, expected_errors, fail
from tokenbank.config import MAX_USER_ID_LENGTH, Settings

app = group("User wallets.")

# Option B in docs/compatibility.md: tokenbank signs a short-lived HS256 JWT whose
# ``sub`` is the user id; an app holding the same secret verifies it
# (tokenbank.client.verify_jwt) without calling tokenbank. ``users token`` mints one
# so that apps can be tested today.
MAX_USER_TOKEN_TTL_SECONDS = 30 * 24 * 3600


@app.command("create")
def users_create(user_id: str, database_url: DatabaseUrl = None) -> None:
    """Open a wallet for USER_ID (idempotent; a new wallet gets the welcome bonus)."""
    result = run(with_service(database_url, lambda service: service.open_wallet(user_id)))
    state = "created" if result.created else "already exists"
    typer.echo(f"wallet {user_id} {state}: balance {result.new_balance}")


@app.command("set-status")
def users_set_status(
    user_id: str,
    status: Annotated[str, typer.Argument(help="active, suspended or closed")],
    database_url: DatabaseUrl = None,
) -> None:
    """Suspend, close or reactivate a wallet."""
    info = run(with_service(database_url, lambda s: s.set_wallet_status(user_id, status)))
    if info is None:
        fail(f"no wallet for user {user_id!r}")
    typer.echo(f"wallet {user_id} is now {status}")


@app.command("set-plan")
def users_set_plan(
    user_id: str,
    plan: Annotated[str, typer.Argument(help="The plan's name.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Put a user on a plan."""
    run(with_plans(database_url, lambda plans: plans.set_user_plan(user_id, plan)))
    typer.echo(f"{user_id} is now on plan {plan}")


@app.command("token")
def users_token(
    user_id: str,
    expires_in: Annotated[
        str, typer.Option("--expires-in", help="Lifetime: 90, 30s, 15m, 1h or 7d (max 30d).")
    ] = "1h",
) -> None:
    """Mint an HS256 JWT for USER_ID, signed with TOKENBANK_JWT_SECRET (no database)."""
    key = jwt_signing_key()
    if not user_id or len(user_id) > MAX_USER_ID_LENGTH:
        fail(f"USER_ID must be 1 to {MAX_USER_ID_LENGTH} characters", BAD_INPUT)
    seconds = token_lifetime_seconds(expires_in)
    now = datetime.fromtimestamp(int(time.time()), UTC)
    typer.echo(user_tokens.mint(key, user_id, issued_at=now, lifetime_seconds=seconds))


def jwt_signing_key() -> str:
    """TOKENBANK_JWT_SECRET, refused when unset or too short for HS256."""
    secret = Settings().jwt_secret
    if secret is None:
        fail("no JWT secret configured: set TOKENBANK_JWT_SECRET (at least 32 bytes)")
    key = user_tokens.usable_key(secret)
    if key is None:
        fail(f"TOKENBANK_JWT_SECRET must be at least {user_tokens.MIN_JWT_SECRET_BYTES} bytes")
    return key


def token_lifetime_seconds(expires_in: str) -> int:
    """``--expires-in`` in seconds: more than 0 and at most 30 days."""
    with expected_errors():
        seconds = parse_duration_seconds(expires_in)
    if not 0 < seconds <= MAX_USER_TOKEN_TTL_SECONDS:
        fail("--expires-in must be more than 0 and at most 30d", BAD_INPUT)
    return seconds
