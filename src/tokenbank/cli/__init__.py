"""The ``tokenbank`` command.

Every command takes ``--database-url`` (or ``TOKENBANK_DATABASE_URL``). Errors print
one line on stderr and exit non-zero: 2 for bad input, 1 for everything else.

One module per command group; the top-level commands live with their subject
(``grant``, ``balance`` and ``history`` in :mod:`.wallets`). A command that cannot do
its work raises :class:`~._errors.CommandFailed` (through ``fail()``, or ``run()``
translating what tokenbank and the database raise); the root group alone prints it.
"""

from __future__ import annotations

import typer

from tokenbank.cli import (
    accounts,
    apps,
    audit,
    costs,
    db,
    features,
    grants,
    holds,
    jobs,
    models,
    packs,
    payments,
    plans,
    renewals,
    serve,
    users,
    wallets,
    webhooks,
)
from tokenbank.cli._errors import ReportingGroup

app = typer.Typer(
    name="tokenbank",
    help="tokenbank: wallets, a double-entry token ledger, and the API apps bill through.",
    cls=ReportingGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("grant")(wallets.grant)
app.command("balance")(wallets.balance)
app.command("history")(wallets.history)
app.command("audit")(audit.audit)
app.command("serve")(serve.serve)
app.add_typer(db.app, name="db")
app.add_typer(users.app, name="users")
app.add_typer(costs.app, name="costs")
app.add_typer(holds.app, name="holds")
app.add_typer(grants.app, name="grants")
app.add_typer(apps.app, name="apps")
app.add_typer(features.app, name="features")
app.add_typer(plans.app, name="plans")
app.add_typer(models.app, name="models")
app.add_typer(renewals.app, name="renewals")
app.add_typer(jobs.app, name="jobs")
app.add_typer(packs.app, name="packs")
app.add_typer(accounts.app, name="accounts")
app.add_typer(payments.app, name="payments")
app.add_typer(webhooks.app, name="webhooks")


def main() -> None:
    """The ``tokenbank`` console script."""
    app()


__all__ = ["app", "main"]
