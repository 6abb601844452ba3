"""``tokenbank renewals``: plan renewals now (``tokenbank jobs run`` runs them on schedule)."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenbank.cli._common import DatabaseUrl, group, run, with_service
from tokenbank.ledger.service import TokenService
from tokenbank.renewals import MonthlyRenewalService
from tokenbank.renewals.results import RenewalBatchResult, RenewalResult

app = group("Plan renewals: each plan's monthly allocation, once per period.")


@app.command("run")
def renewals_run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what each user would get; change nothing.")
    ] = False,
    tier: Annotated[str | None, typer.Option(help="Only users on this plan.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many users.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Renew every user whose allocation is due, one batch now; exits 1 if any failed."""

    async def act(service: TokenService) -> RenewalBatchResult:
        with typer.progressbar(length=0, label="renewing", file=None) as bar:

            def advance(result: RenewalResult, total: int) -> None:
                bar.length = total
                bar.update(1)

            return await MonthlyRenewalService(service).renew_all_eligible(
                dry_run=dry_run, tier=tier, limit=limit, on_result=advance
            )

    batch = run(with_service(database_url, act))
    for renewal in batch.renewals:
        typer.echo(describe_renewal(renewal))
    for error in batch.errors:
        typer.echo(f"FAILED {error.user_id}: {error.error}", err=True)
    verb = "would renew" if dry_run else "renewed"
    typer.echo(
        f"{verb} {batch.successful} of {batch.total_processed} due user(s):"
        f" {batch.failed} failed, {batch.skipped} renewed by another runner first"
    )
    if batch.failed:
        raise typer.Exit(1)


@app.command("check")
def renewals_check(user_id: str, database_url: DatabaseUrl = None) -> None:
    """Whether USER_ID's plan allocation is due, and when the next one is."""
    found = run(
        with_service(database_url, lambda s: MonthlyRenewalService(s).check_eligibility(user_id))
    )
    due = found.next_renewal_date.isoformat() if found.next_renewal_date else "-"
    state = "eligible" if found.eligible else f"not eligible: {found.reason}"
    typer.echo(f"{user_id}  plan {found.tier or '-'}  {state}  next renewal {due}")


def describe_renewal(renewal: RenewalResult) -> str:
    expires = renewal.expires_at.isoformat() if renewal.expires_at else "never"
    period = renewal.period_start.date().isoformat() if renewal.period_start else "?"
    balance = "" if renewal.new_balance is None else f", balance {renewal.new_balance}"
    return (
        f"{renewal.user_id}  {renewal.tier}  period from {period}: +{renewal.tokens_granted}"
        f" (expires {expires}), carried {renewal.tokens_carried},"
        f" forfeited {renewal.tokens_forfeited}{balance}"
    )
