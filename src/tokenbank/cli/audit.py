"""``tokenbank audit``: prove the books and print the report."""

from __future__ import annotations

import typer

from tokenbank.cli._common import DatabaseUrl, run, with_service
from tokenbank.ledger.results import AuditReport


def audit(database_url: DatabaseUrl = None) -> None:
    """Prove the books: exit 0 exactly when every check passes."""
    report = run(with_service(database_url, lambda service: service.audit()))
    print_audit(report)
    if not report.ok:
        raise typer.Exit(1)  # the verdict, not an error: the report says what failed


def print_audit(report: AuditReport) -> None:
    """The totals on stdout; each failed check with its rows on stderr."""
    typer.echo(
        f"{report.transactions} transactions, {report.entries} entries, {report.wallets} wallets"
    )
    for account, total in sorted(report.system_balances.items()):
        typer.echo(f"  system account {account}: {total}")
    if report.ok:
        typer.echo("audit passed: every transaction sums to zero and every balance matches")
        return
    for problem, rows in report.problems.items():
        typer.echo(f"FAILED {problem}:", err=True)
        for row in rows:
            typer.echo(f"  {row}", err=True)
