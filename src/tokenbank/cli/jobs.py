"""``tokenbank jobs``: the worker that runs renewals on schedule and the sweeps."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from tokenbank.cli._common import DatabaseUrl, group, run, with_service
from tokenbank.config import get_settings
from tokenbank.jobs.worker import JobsWorker, PassTotals
from tokenbank.ledger.service import TokenService
from tokenbank.logs import configure_logging
from tokenbank.metrics import serve_http

app = group("The jobs worker: renewals on their cron schedule, expiry and hold sweeps.")


@app.command("run")
def jobs_run(
    once: Annotated[
        bool, typer.Option("--once", help="Run every job once now and exit (for cron or CI).")
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve this worker's /metrics (Prometheus, no key) on this port.",
            min=1,
            max=65_535,
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address for --metrics-port (keep it private).")
    ] = "127.0.0.1",
    database_url: DatabaseUrl = None,
) -> None:
    """Run the jobs until stopped (Ctrl-C or SIGTERM); several workers may run at once."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)  # the jobs' own reports
    if metrics_port is not None:
        serve_http(metrics_port, metrics_host)

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
