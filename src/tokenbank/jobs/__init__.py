"""The jobs worker: renewals on a cron schedule, and the sweeps (decision 16)."""

from tokenbank.jobs.worker import JobsWorker

__all__ = ["JobsWorker"]
