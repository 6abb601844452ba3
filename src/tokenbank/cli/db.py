"""``tokenbank db``: create, migrate and inspect the database schema."""

from __future__ import annotations

import typer

from tokenbank.cli._common import DatabaseUrl, database_url_or_default, group, run
from tokenbank.config import get_settings
from tokenbank.db.engine import create_engine
from tokenbank.db.migrate import current_revision, head_revision, upgrade

app = group("Database schema.")


@app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Create or migrate the database schema to the newest version."""

    async def action() -> str | None:
        engine = create_engine(database_url_or_default(database_url), get_settings())
        try:
            await upgrade(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    typer.echo(f"database at revision {run(action())}")


@app.command("current")
def db_current(database_url: DatabaseUrl = None) -> None:
    """Print the schema revision of the database and the newest one."""

    async def action() -> str | None:
        engine = create_engine(database_url_or_default(database_url), get_settings())
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    typer.echo(f"current: {run(action())}  head: {head_revision()}")
