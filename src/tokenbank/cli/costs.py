"""``tokenbank costs``: the table of what each operation costs in tokens."""

from __future__ import annotations

import typer

from tokenbank.cli._common import DatabaseUrl, group, run, with_service
from tokenbank.cli._errors import fail

app = group("The operation cost table.")


@app.command("set")
def costs_set(operation: str, tokens: int, database_url: DatabaseUrl = None) -> None:
    """Set what one OPERATION costs, in tokens."""
    run(with_service(database_url, lambda service: service.set_operation_cost(operation, tokens)))
    typer.echo(f"{operation} costs {tokens} tokens")


@app.command("list")
def costs_list(database_url: DatabaseUrl = None) -> None:
    """List the cost table."""
    table = run(with_service(database_url, lambda service: service.get_operation_costs()))
    for operation, tokens in sorted(table.items()):
        typer.echo(f"{operation:<32} {tokens:>12}")


@app.command("delete")
def costs_delete(operation: str, database_url: DatabaseUrl = None) -> None:
    """Remove OPERATION from the cost table."""
    deleted = run(
        with_service(database_url, lambda service: service.delete_operation_cost(operation))
    )
    if not deleted:
        fail(f"no cost is set for {operation!r}")
    typer.echo(f"{operation} removed")
