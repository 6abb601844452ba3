"""``tokenbank serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from tokenbank.cli._common import DatabaseUrl
from tokenbank.cli.db import db_upgrade
from tokenbank.config import get_settings


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=64)] = 1,
    migrate: Annotated[
        bool, typer.Option(help="Run `db upgrade` before serving (once, before workers).")
    ] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the HTTP API (OpenAPI and interactive docs at /docs)."""
    import uvicorn  # only the server needs it: the other commands start faster

    if database_url:
        # Workers build their settings from the environment.
        os.environ["TOKENBANK_DATABASE_URL"] = database_url
        get_settings.cache_clear()
    if migrate:
        db_upgrade(database_url)
    uvicorn.run(
        "tokenbank.api.app:create_server_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        server_header=False,
    )
