"""Every Prometheus metric tokenbank exports, defined once (the official client).

Code that measures something imports the object (or the small helper) from here and
calls it; nothing else creates metrics, so the names, labels and buckets are all in
one place and ``/metrics`` shows them from the first scrape on.

Labels are bounded sets (a route *template*, an operation name, an outcome word),
never a user id, a raw path or a key: a label value unseen before creates a series
for the life of the process (in multi-process mode, a file row).

Multi-process mode (``tokenbank serve --workers N``): the client picks its storage
when it is imported. With ``PROMETHEUS_MULTIPROC_DIR`` set in the environment (``tokenbank
serve`` sets it before starting more than one worker), each worker writes its values
to files there and :func:`exposition` sums them, so any worker answers for all.
Gauges say how they combine (``livesum``: the live processes' values added up).
"""

from __future__ import annotations

import bisect
import functools
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# A request that matched no route (a 404, or refused before routing: 413, 415).
UNMATCHED_ROUTE = "<unmatched>"

# --- HTTP ------------------------------------------------------------------------------
# Sub-millisecond to seconds: a deduct answers in about a millisecond, a page in tens.
HTTP_BUCKETS_SECONDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
http_requests_total = Counter(
    "tokenbank_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)


class FoldingHistogram(Histogram):
    """A histogram that also takes observations tallied elsewhere, bucket by bucket
    (:class:`RequestTally`), in one write per bucket rather than one per observation."""

    def add_tallied(self, bucket_counts: Sequence[int], total: float) -> None:
        """``bucket_counts[i]`` more observations in bucket i (not cumulative), whose
        values sum to ``total``. On a labelled histogram, call it on a child
        (``.labels(...)``), as ``observe``."""
        self._raise_if_not_observable()  # type: ignore[no-untyped-call]
        self._sum.inc(total)
        for value, count in zip(self._buckets, bucket_counts, strict=True):
            if count:
                value.inc(count)

    def upper_bounds(self) -> tuple[float, ...]:
        """Each bucket's upper bound, +Inf last (an observation goes in the first
        bucket whose bound it does not exceed)."""
        return tuple(self._upper_bounds)


http_request_duration_seconds = FoldingHistogram(
    "tokenbank_http_request_duration_seconds",
    "Time from a request's arrival to its last response byte, by method and route template.",
    ["method", "route"],
    buckets=HTTP_BUCKETS_SECONDS,
)


class RequestTally:
    """The answered requests' counts and durations, kept in this process's memory and
    folded into their Prometheus values by :meth:`fold`.

    In multi-process mode each write to a value takes a lock, checks the process id
    and writes a file mapped in memory: three of them a request cost about a quarter
    of a ping's CPU (measured in process). Tallied here, a request costs a dict
    update; the API's processes fold their tallies once a second
    (:data:`FOLD_INTERVAL_SECONDS`), before every exposition and when they stop, so a
    scrape answered by another worker may miss the last second of this one's requests
    (the next scrape counts them) and a worker killed outright loses at most that second.
    """

    def __init__(self) -> None:
        # The lock keeps a fold (an exposition runs in a thread) and an add apart.
        self._lock = threading.Lock()
        self._counts: dict[Counter, int] = {}
        self._durations: dict[FoldingHistogram, _Durations] = {}

    def add(self, counter: Counter, histogram: FoldingHistogram, seconds: float) -> None:
        """One request counted on ``counter`` and its duration observed on ``histogram``
        (both labelled children)."""
        with self._lock:
            self._counts[counter] = self._counts.get(counter, 0) + 1
            durations = self._durations.get(histogram)
            if durations is None:
                durations = self._durations[histogram] = _Durations(histogram.upper_bounds())
            durations.bucket_counts[bisect.bisect_left(durations.bounds, seconds)] += 1
            durations.total_seconds += seconds

    def fold(self) -> None:
        """Everything tallied so far, into the Prometheus values."""
        with self._lock:
            counts, self._counts = self._counts, {}
            durations, self._durations = self._durations, {}
        for counter, count in counts.items():
            counter.inc(count)
        for histogram, tallied in durations.items():
            histogram.add_tallied(tallied.bucket_counts, tallied.total_seconds)


@dataclass(slots=True)
class _Durations:
    """One histogram's observations since the last fold: a count per bucket (an
    observation goes in the first whose bound it does not exceed) and their sum."""

    bounds: tuple[float, ...]
    bucket_counts: list[int] = field(init=False)
    total_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.bucket_counts = [0] * len(self.bounds)


FOLD_INTERVAL_SECONDS = 1.0
http_tally = RequestTally()

# --- the ledger -------------------------------------------------------------------------
# operation: open_wallet, credit, debit, refund, claw_back, hold, capture, void.
# outcome: ok, replay (an idempotent retry answered from the first), insufficient,
# conflict (the key was used for another request), refused (any other business
# refusal: wallet not found, suspended, ...), error (the database failed it).
ledger_operations_total = Counter(
    "tokenbank_ledger_operations_total",
    "Ledger operations by operation and outcome.",
    ["operation", "outcome"],
)
BATCH_BUCKETS_OPERATIONS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
group_commit_batch_operations = Histogram(
    "tokenbank_group_commit_batch_operations",
    "Operations per group-commit batch (one transaction, one commit).",
    buckets=BATCH_BUCKETS_OPERATIONS,
)
group_commit_wait_seconds = Histogram(
    "tokenbank_group_commit_wait_seconds",
    "How long the oldest operation of a batch queued before its batch began writing.",
    buckets=HTTP_BUCKETS_SECONDS,
)
group_commit_write_seconds = Histogram(
    "tokenbank_group_commit_write_seconds",
    "How long a group-commit batch took to write and commit.",
    buckets=HTTP_BUCKETS_SECONDS,
)

# --- the database pool (set at each scrape and every few seconds by each process) -----
db_pool_checked_out_connections = Gauge(
    "tokenbank_db_pool_checked_out_connections",
    "Database connections in use (checked out of the pool), summed over live processes.",
    multiprocess_mode="livesum",
)
db_pool_size_connections = Gauge(
    "tokenbank_db_pool_size_connections",
    "Connections the pools keep open at most (pool size, not overflow), over live processes.",
    multiprocess_mode="livesum",
)
db_pool_overflow_connections = Gauge(
    "tokenbank_db_pool_overflow_connections",
    "Connections open beyond the pool size (overflow), summed over live processes.",
    multiprocess_mode="livesum",
)

# --- Stripe ----------------------------------------------------------------------------
stripe_events_received_total = Counter(
    "tokenbank_stripe_events_received_total",
    "Stripe webhook deliveries received (before their signature is checked).",
)
# outcome: applied, ignored (not an event tokenbank acts on, or nothing to do),
# duplicate (an event id taken before), rejected (bad signature or payload).
stripe_events_total = Counter(
    "tokenbank_stripe_events_total",
    "Stripe events by what tokenbank did with them.",
    ["outcome"],
)

# --- jobs ------------------------------------------------------------------------------
# job: renewals, sweeps, recharges, sweep_holds (the API's own), deliveries, ...
# outcome: ok, error.
job_runs_total = Counter(
    "tokenbank_job_runs_total", "Job runs by job and outcome.", ["job", "outcome"]
)
JOB_BUCKETS_SECONDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)
job_duration_seconds = Histogram(
    "tokenbank_job_duration_seconds", "How long a job run took.", ["job"],
    buckets=JOB_BUCKETS_SECONDS,
)  # fmt: skip

# --- webhook deliveries (the delivery code calls record_webhook_delivery) --------------
WEBHOOK_OUTCOMES = frozenset({"delivered", "failed", "timeout", "dead_lettered"})
webhook_deliveries_total = Counter(
    "tokenbank_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered (2xx), failed (another status or"
    " a connection error; retried), timeout (retried), dead_lettered (given up), other.",
    ["outcome"],
)
# From the event's creation (its outbox row) to the attempt that delivered it: a
# receiver down for a day shows as a day; the schedule spans about three days.
LAG_BUCKETS_SECONDS = (
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0, 72 * 3600.0,
)  # fmt: skip
webhook_delivery_lag_seconds = Histogram(
    "tokenbank_webhook_delivery_lag_seconds",
    "Seconds from an event's creation to its successful delivery.",
    buckets=LAG_BUCKETS_SECONDS,
)


def record_webhook_delivery(outcome: str, lag_seconds: float | None = None) -> None:
    """One delivery attempt: ``outcome`` one of WEBHOOK_OUTCOMES (else counted as
    ``other``); ``lag_seconds`` (event created -> delivered) when it was delivered."""
    webhook_deliveries_total.labels(outcome if outcome in WEBHOOK_OUTCOMES else "other").inc()
    if lag_seconds is not None:
        webhook_delivery_lag_seconds.observe(max(lag_seconds, 0.0))


class JobTimer:
    """``with JobTimer("renewals"): ...`` counts the run as ok or error and times it."""

    def __init__(self, job: str) -> None:
        self._job = job
        self._started = 0.0

    def __enter__(self) -> JobTimer:
        self._started = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        job_duration_seconds.labels(self._job).observe(time.perf_counter() - self._started)
        job_runs_total.labels(self._job, "ok" if exc_type is None else "error").inc()


P = ParamSpec("P")
R = TypeVar("R")


def timed_job(job: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate an async job: each run counted (ok or error) and timed as ``job``."""

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(function)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with JobTimer(job):
                return await function(*args, **kwargs)

        return run

    return decorate


def update_pool_gauges(engine: AsyncEngine) -> None:
    """Read the engine's pool into the gauges (SQLite's or a NullPool: left at 0)."""
    pool = engine.sync_engine.pool
    if isinstance(pool, QueuePool):
        db_pool_checked_out_connections.set(pool.checkedout())
        db_pool_size_connections.set(pool.size())
        db_pool_overflow_connections.set(max(pool.overflow(), 0))


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_VARIABLE))


def _registry() -> CollectorRegistry:
    """Every process's values in multi-process mode, else this one's."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def exposition() -> bytes:
    """The Prometheus text of :func:`_registry`, this process's tallies folded in first."""
    http_tally.fold()
    return generate_latest(_registry())


def serve_http(port: int, host: str) -> None:
    """A /metrics listener of its own in a thread (``tokenbank jobs run --metrics-port``)."""
    start_http_server(port, addr=host, registry=_registry())


def mark_process_dead(pid: int) -> None:
    """Drop a gone worker's live gauges (its counters stay: totals never go down)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
