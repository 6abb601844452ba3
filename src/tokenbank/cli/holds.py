"""``tokenbank holds``: housekeeping of token holds (reservations)."""

from __future__ import annotations

import typer

from tokenbank.cli._common import DatabaseUrl, group, run, with_service

app = group("Token holds (reservations).")


@app.command("sweep")
def holds_sweep(database_url: DatabaseUrl = None) -> None:
    """Release every expired hold."""
    released = run(with_service(database_url, lambda service: service.release_expired_holds()))
    typer.echo(f"released {released} expired holds")
