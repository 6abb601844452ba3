"""``tokenbank grants``: a wallet's grants, and the expiry sweep."""

from __future__ import annotations

import typer

from tokenbank.cli._common import DatabaseUrl, group, run, with_service
from tokenbank.cli._errors import fail
from tokenbank.config import DEFAULT_PAGE_SIZE
from tokenbank.ledger.results import GrantView, ScheduledCreditView
from tokenbank.ledger.service import TokenService

app = group("Grants: a wallet's tokens by category, priority and expiry.")


@app.command("list")
def grants_list(
    user_id: str, limit: int = DEFAULT_PAGE_SIZE, database_url: DatabaseUrl = None
) -> None:
    """USER_ID's grants, newest first, after the credits scheduled for later."""

    async def read(
        service: TokenService,
    ) -> tuple[list[ScheduledCreditView] | None, list[GrantView] | None]:
        waiting = await service.get_scheduled_credits(user_id, limit=limit)
        return waiting, await service.get_grants(user_id, limit=limit)

    waiting, found = run(with_service(database_url, read))
    if found is None or waiting is None:
        fail(f"no wallet for user {user_id!r}")
    for credit in waiting:
        expires = credit.expires_at.isoformat() if credit.expires_at is not None else "never"
        typer.echo(
            f"-  scheduled {credit.category:<11} priority {credit.priority:<3}"
            f" {credit.amount_tokens} from {credit.effective_at.isoformat()}"
            f"  expires {expires}  ({credit.source})"
        )
    for grant in found:
        typer.echo(describe_grant(grant))


def describe_grant(grant: GrantView) -> str:
    expires = grant.expires_at.isoformat() if grant.expires_at is not None else "never"
    return (
        f"{grant.grant_id}  {grant.status:<7} {grant.category:<11} priority {grant.priority:<3}"
        f" {grant.remaining_tokens}/{grant.amount_tokens}  expires {expires}  ({grant.source})"
    )


@app.command("sweep")
def grants_sweep(database_url: DatabaseUrl = None) -> None:
    """Apply scheduled credits that came due, and expire what expired grants still
    hold (except what pending holds need)."""

    async def sweep(service: TokenService) -> tuple[int, int]:
        return await service.apply_scheduled_credits(), await service.expire_grants()

    scheduled, expired = run(with_service(database_url, sweep))
    typer.echo(
        f"looked at {scheduled} wallets with scheduled credits due"
        f" and {expired} wallets with expired grants"
    )
