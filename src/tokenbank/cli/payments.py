"""``tokenbank payments``: putting right what a lost webhook left undone (decision 14)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from tokenbank.cli._common import DatabaseUrl, group, run, with_service
from tokenbank.cli._errors import BAD_INPUT, fail
from tokenbank.config import get_settings
from tokenbank.ledger.service import TokenService
from tokenbank.payments.recharge import RechargeRun, RechargeService, summary
from tokenbank.payments.service import PaymentService, Reconciled
from tokenbank.pricing.service import PricingService

app = group("Payments through Stripe.")


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since: not an ISO 8601 date or date-time: {value!r}", BAD_INPUT)
    if moment.tzinfo is None:
        fail("--since: give a timezone (e.g. 2026-11-01T00:00:00Z)", BAD_INPUT)
    return moment


@app.command("reconcile")
def payments_reconcile(
    since: Annotated[
        str | None,
        typer.Option(help="Look at PaymentIntents created since then (default: 3 days ago)."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Ask Stripe for succeeded PaymentIntents and credit any that no webhook credited
    (exactly once); print what was fixed."""
    start = _since(since)

    async def act(service: TokenService) -> list[Reconciled]:
        pricing = PricingService(await service.engine(), settings=get_settings())
        return await PaymentService(service, pricing=pricing).reconcile(start)

    fixed = run(with_service(database_url, act))
    for item in fixed:
        typer.echo(f"{item.payment_intent_id} ({item.purchase_id}): {item.outcome}, {item.detail}")
    credited = sum(1 for item in fixed if item.outcome == "applied")
    typer.echo(f"{credited} purchase(s) credited; {len(fixed) - credited} refused")


@app.command("recharge-now")
def payments_recharge_now(
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=10_000,
            help="Charge at most this many queued recharges (default:"
            " TOKENBANK_RECHARGE_BATCH_LIMIT).",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run one pass of the auto-recharge worker now: charge the queued recharges on the
    saved cards; print what became of each."""

    async def act(service: TokenService) -> list[RechargeRun]:
        settings = get_settings()
        pricing = PricingService(await service.engine(), settings=settings)
        payments = PaymentService(service, pricing=pricing)
        try:
            recharges = RechargeService(payments, service)
            return await recharges.run_recharges(limit or settings.recharge_batch_limit)
        finally:
            await payments.aclose()

    runs = run(with_service(database_url, act))
    for item in runs:
        purchase = f", purchase {item.purchase_id}" if item.purchase_id else ""
        typer.echo(
            f"recharge {item.recharge_id} ({item.user_id or '?'}): {item.status}{purchase}:"
            f" {item.detail}"
        )
    typer.echo(summary(runs))
