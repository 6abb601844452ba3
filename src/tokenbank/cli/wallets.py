"""``tokenbank grant``, ``balance`` and ``history``: the tokens in one user's wallet."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer

from tokenbank.apps.service import parse_duration_seconds
from tokenbank.cli._common import DatabaseUrl, run, with_service
from tokenbank.cli._errors import fail
from tokenbank.config import DEFAULT_PAGE_SIZE
from tokenbank.ledger.grants import DEFAULT_GRANT_PRIORITY
from tokenbank.ledger.results import LedgerEntryView, OperationResult
from tokenbank.ledger.service import TokenService


def grant(
    user_id: str,
    amount: int,
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded on the ledger.")],
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Makes a retried grant safe.")
    ] = None,
    category: Annotated[
        str | None, typer.Option("--category", help="paid or promotional (default).")
    ] = None,
    priority: Annotated[
        int, typer.Option("--priority", help="0-100; a lower number is spent first.")
    ] = DEFAULT_GRANT_PRIORITY,
    expires_in: Annotated[
        str | None,
        typer.Option("--expires-in", help="Expire after this long (30d, 12h, ...); default never."),
    ] = None,
    starts_in: Annotated[
        str | None,
        typer.Option("--starts-in", help="Take effect after this long (7d, ...); default now."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Grant AMOUNT tokens to USER_ID as an admin_grant (one grant of its own). With
    --starts-in it waits until then; --expires-in counts from when it starts."""

    async def credit(service: TokenService) -> OperationResult:
        now = service.clock()
        effective_at = None
        if starts_in is not None:
            effective_at = now + timedelta(seconds=parse_duration_seconds(starts_in))
        expires_at = None
        if expires_in is not None:
            seconds = parse_duration_seconds(expires_in)
            expires_at = (effective_at or now) + timedelta(seconds=seconds)
        return await service.credit(
            user_id,
            amount=amount,
            operation_type="admin_grant",
            description=reason,
            idempotency_key=idempotency_key,
            category=category,
            priority=priority,
            expires_at=expires_at,
            effective_at=effective_at,
        )

    echo_result(run(with_service(database_url, credit)))


def echo_result(result: OperationResult) -> None:
    """The new balance of a ledger operation, or its refusal as the command's failure."""
    if not result.success:
        fail(f"{result.error} ({result.error_code})")
    if result.scheduled_credit_id is not None and result.effective_at is not None:
        typer.echo(
            f"ok: scheduled credit {result.scheduled_credit_id} takes effect"
            f" {result.effective_at.isoformat()}; balance {result.new_balance} until then"
        )
        return
    typer.echo(
        f"ok: balance {result.new_balance} (entry {result.ledger_entry_id},"
        f" transaction {result.transaction_id})"
    )


def balance(user_id: str, database_url: DatabaseUrl = None) -> None:
    """Show a user's balance, held and available tokens."""
    info = run(with_service(database_url, lambda service: service.get_balance(user_id)))
    if info is None:
        fail(f"no wallet for user {user_id!r}")
    typer.echo(
        f"{user_id}: balance {info.tokens_balance}, held {info.held},"
        f" available {info.available}, spent {info.tokens_spent}, status {info.status}"
    )


def history(
    user_id: str,
    limit: Annotated[int, typer.Option(help="Entries per page.")] = DEFAULT_PAGE_SIZE,
    offset: Annotated[int, typer.Option(help="Entries to skip.")] = 0,
    operation_type: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List a user's ledger entries, newest first."""
    entries = run(
        with_service(
            database_url,
            lambda service: service.get_ledger().get_user_entries(
                user_id, limit=limit, offset=offset, operation_type=operation_type
            ),
        )
    )
    for entry in entries:
        typer.echo(entry_json(entry) if as_json else entry_line(entry))
    if not entries and not as_json:
        typer.echo(f"no entries for {user_id}")


def entry_json(entry: LedgerEntryView) -> str:
    """One ledger entry as a line of JSON (``history --json``)."""
    return json.dumps(
        {
            "id": entry.id,
            "type": entry.operation_type,
            "amount": entry.tokens_amount,
            "balance_before": entry.balance_before,
            "balance_after": entry.balance_after,
            "description": entry.description,
            "created_at": entry.created_at.isoformat(),
        }
    )


def entry_line(entry: LedgerEntryView) -> str:
    """One ledger entry as a line of the ``history`` table."""
    return (
        f"{entry.created_at:%Y-%m-%d %H:%M:%S}  #{entry.id:<6}"
        f" {entry.operation_type:<18} {entry.tokens_amount:>+12}"
        f"  -> {entry.balance_after:<12} {entry.description or ''}"
    )
