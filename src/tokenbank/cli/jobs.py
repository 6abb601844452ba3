"""``tokenbank jobs``: the worker that runs renewals on schedule and the sweeps."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from tokenbank.cli._common import DatabaseUrl, group, run, with_service
from tokenbank.jobs.worker import JobsWorker, PassTotals
from tokenbank.ledger.service import TokenService

app = group("The jobs worker: renewals on their cron schedule, expiry and hold sweeps.")


@app.command("run")
def jobs_run(
    once: Annotated[
        bool, typer.Option("--once", help="Run every job once now and exit (for cron or CI).")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Run the jobs until stopped (Ctrl-C or SIGTERM); several workers may run at once."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("tokenbank").setLevel(logging.INFO)  # the jobs' own reports

    async def act(service: TokenService) -> PassTotals | None:
        worker = JobsWorker(service)
        if once:
            return await worker.run_once()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await worker.run_forever(stop)
        return None

    totals = run(with_service(database_url, act))
    if totals is not None:
        typer.echo(
            f"renewed {totals.renewed}, failed {totals.failed},"
            f" {totals.skipped} renewed by another worker first"
        )
        if totals.failed:
            raise typer.Exit(1)
