"""``tokenbank jobs run``: the work that time asks for, in a long-running process.

- **renewals**, on ``TOKENBANK_RENEWAL_CRON`` (UTC; by default ``0 2 * * *``), in
  batches of ``TOKENBANK_RENEWAL_BATCH_LIMIT`` users until none is due, and once when
  the worker starts (a renewal missed while no worker ran is late, never lost: due
  dates are in the database);
- **sweeps** every ``TOKENBANK_SWEEP_INTERVAL_SECONDS``: expired holds released,
  scheduled credits that came due applied, expired grants expired (a spend catches
  its wallet up anyway; the sweep makes the books say so on time);
- **auto-recharges** every ``TOKENBANK_RECHARGE_INTERVAL_SECONDS``, when a Stripe
  secret key is configured: up to ``TOKENBANK_RECHARGE_BATCH_LIMIT`` queued recharges
  charged per pass (``payments/recharge.py``);
- **webhook deliveries** every ``TOKENBANK_WEBHOOK_INTERVAL_SECONDS``: new events fanned
  out to the endpoints that hear them, due deliveries claimed, sent and recorded
  (``events/delivery.py``, decision 15).

Several workers may run at once, on one or several machines: a renewal locks its
wallet and is recorded under (wallet, period), so each period is renewed once; the
sweeps lock the wallets they change; a recharge is claimed by one worker (``SKIP
LOCKED``) and charged under a key of its own; a delivery is claimed under a lease
(``SKIP LOCKED``) and recorded under the attempt it claimed. APScheduler keeps the
schedule (a cron parser written here would get some expression wrong).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from tokenbank.events.delivery import DeliveryPass, DeliveryService
from tokenbank.events.delivery import summary as delivery_summary
from tokenbank.events.service import sync_alert_levels
from tokenbank.ledger.service import TokenService
from tokenbank.metrics import timed_job
from tokenbank.payments.recharge import RechargeRun, RechargeService, summary
from tokenbank.payments.service import PaymentService
from tokenbank.pricing.service import PricingService
from tokenbank.renewals.results import RenewalBatchResult
from tokenbank.renewals.service import MonthlyRenewalService

logger = logging.getLogger("tokenbank.jobs")

# A renewal pass stops after this many batches even if users are still due (the next
# pass continues): a bound on one pass, never reached at 1,000 users a batch.
MAX_BATCHES_PER_PASS = 10_000


@dataclass(slots=True)
class PassTotals:
    """What one renewal pass did, over all its batches."""

    renewed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, batch: RenewalBatchResult) -> None:
        self.renewed += batch.successful
        self.failed += batch.failed
        self.skipped += batch.skipped
        self.errors.extend(f"{error.user_id}: {error.error}" for error in batch.errors)


class JobsWorker:
    def __init__(self, service: TokenService) -> None:
        self._service = service
        self._renewals = MonthlyRenewalService(service)
        settings = service.settings
        self._batch_limit = settings.renewal_batch_limit
        self._cron = settings.renewal_cron
        self._sweep_seconds = settings.sweep_interval_seconds
        self._recharge_seconds = settings.recharge_interval_seconds
        self._recharge_limit = settings.recharge_batch_limit
        # Auto-recharges charge a card: without a Stripe key there is nothing to run.
        self.recharges_enabled = settings.stripe_secret_key is not None
        self._webhook_seconds = settings.webhook_interval_seconds
        self._deliveries: DeliveryService | None = None

    @timed_job("renewals")
    async def renew_due(self) -> PassTotals:
        """Renew every user due now, batch after batch (a user that fails is retried
        by the next pass, not this one)."""
        totals = PassTotals()
        for _ in range(MAX_BATCHES_PER_PASS):
            batch = await self._renewals.renew_all_eligible(limit=self._batch_limit)
            totals.add(batch)
            # A batch that renewed nobody made no progress: the rest failed or were
            # taken by another worker.
            if batch.total_processed < self._batch_limit or batch.successful == 0:
                break
        logger.info(
            "renewals: %d renewed, %d failed, %d done by another worker",
            totals.renewed,
            totals.failed,
            totals.skipped,
        )
        for error in totals.errors:
            logger.warning("renewal failed: %s", error)
        return totals

    @timed_job("sweeps")
    async def sweep(self) -> None:
        """``TokenService.sweep``, logged when it found something."""
        holds, scheduled, expired = await self._service.sweep()
        if holds or scheduled or expired:
            logger.info(
                "sweep: %d holds released; wallets with credits due %d, with grants due %d",
                holds,
                scheduled,
                expired,
            )

    @timed_job("recharges")
    async def recharge(self) -> list[RechargeRun]:
        """One pass of auto-recharges, logged when it found something."""
        service = self._service
        pricing = PricingService(
            await service.engine(), settings=service.settings, clock=service.clock
        )
        # A PaymentService per pass: its Stripe connection opens only when a recharge is
        # due, and is closed when the pass ends.
        payments = PaymentService(service, pricing=pricing)
        try:
            runs = await RechargeService(payments, service).run_recharges(self._recharge_limit)
        finally:
            await payments.aclose()
        if runs:
            logger.info("auto-recharge: %s", summary(runs))
        for run in runs:
            if run.status != "succeeded":
                logger.warning("recharge %d (%s): %s", run.recharge_id, run.status, run.detail)
        return runs

    @timed_job("deliveries")
    async def deliver(self) -> DeliveryPass:
        """One pass of webhook deliveries, logged when it did something."""
        if self._deliveries is None:
            service = self._service
            self._deliveries = DeliveryService(
                await service.engine(), service.settings, clock=service.clock
            )
        result = await self._deliveries.run_pass()
        if result.fanned_out or result.claimed:
            logger.info("webhooks: %s", delivery_summary(result))
        return result

    async def run_once(self) -> PassTotals:
        """Every job once, now (``tokenbank jobs run --once``)."""
        service = self._service
        await sync_alert_levels(await service.engine(), service.settings, service.clock())
        await self.sweep()
        if self.recharges_enabled:
            await self.recharge()
        totals = await self.renew_due()
        # Last: the events the other jobs just wrote go out in this pass.
        await self.deliver()
        return totals

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Run on schedule until ``stop`` is set; a job that fails is logged and runs
        again at its next time."""
        scheduler = AsyncIOScheduler(timezone="UTC")
        scheduler.add_job(
            self._logged(self.renew_due),
            CronTrigger.from_crontab(self._cron, timezone="UTC"),
            id="renewals",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        scheduler.add_job(
            self._logged(self.sweep),
            IntervalTrigger(seconds=self._sweep_seconds),
            id="sweeps",
            max_instances=1,
            coalesce=True,
        )
        if self.recharges_enabled:
            scheduler.add_job(
                self._logged(self.recharge),
                IntervalTrigger(seconds=self._recharge_seconds),
                id="recharges",
                max_instances=1,
                coalesce=True,
            )
        scheduler.add_job(
            self._logged(self.deliver),
            IntervalTrigger(seconds=self._webhook_seconds),
            id="webhooks",
            max_instances=1,
            coalesce=True,
        )
        scheduler.start()
        try:
            await self._logged(self.run_once)()
            logger.info("jobs worker running: renewals at %r (UTC)", self._cron)
            await stop.wait()
        finally:
            scheduler.shutdown(wait=False)

    @staticmethod
    def _logged(job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await job()
            except Exception:  # a job's failure must not stop the worker
                logger.exception("job %s failed; it runs again at its next time", job.__name__)

        return run
