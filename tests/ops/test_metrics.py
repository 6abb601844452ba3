"""/metrics read back: each counter and histogram moves by what the requests did.

The client's default registry lives as long as the test process, so every check is
a difference between a scrape before and one after.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import stripe
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy.exc import OperationalError

from tests.ops.conftest import WEBHOOK_SECRET, Ops, OpsFactory, Samples
from tokenbank import metrics
from tokenbank.jobs.worker import JobsWorker

DEDUCT = "/api/tokens/deduct"


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return after.get(name, **labels) - before.get(name, **labels)


async def _deduct(ops: Ops, amount: int, reference: str | None = None) -> httpx.Response:
    body: dict[str, object] = {"userId": "alice", "amount": amount}
    if reference is not None:
        body["referenceId"] = reference
    return await ops.client.post(DEDUCT, json=body, headers=ops.headers())


async def test_requests_and_ledger_operations_are_counted(ops: Ops) -> None:
    await ops.services.tokens.open_wallet("alice")
    await ops.services.tokens.credit("alice", amount=100, operation_type="bonus")
    before = await ops.scrape()

    for reference in ("r-1", "r-2", "r-3"):
        assert (await _deduct(ops, 10, reference)).status_code == 200
    assert (await _deduct(ops, 10, "r-1")).status_code == 200  # a retry: replayed
    assert (await _deduct(ops, 1_000)).status_code == 402  # insufficient
    balance = await ops.client.get("/api/tokens/balance/alice", headers=ops.headers())
    assert balance.status_code == 200
    assert (await ops.client.get("/no/such/page")).status_code == 404
    after = await ops.scrape()

    requests = "tokenbank_http_requests_total"
    post = {"method": "POST", "route": DEDUCT}
    assert _delta(before, after, requests, **post, status="200") == 4
    assert _delta(before, after, requests, **post, status="402") == 1
    balance_route = {"method": "GET", "route": "/api/tokens/balance/{userId}"}
    assert _delta(before, after, requests, **balance_route, status="200") == 1
    unmatched = {"method": "GET", "route": metrics.UNMATCHED_ROUTE, "status": "404"}
    assert _delta(before, after, requests, **unmatched) == 1
    # The latency histogram: one observation per request, in its cumulative buckets.
    duration = "tokenbank_http_request_duration_seconds"
    assert _delta(before, after, f"{duration}_count", **post) == 5
    assert _delta(before, after, f"{duration}_bucket", **post, le="+Inf") == 5
    assert _delta(before, after, f"{duration}_sum", **post) > 0
    # Route templates, never raw paths: no user id and no unknown path in the labels.
    assert not any("alice" in str(labels) for _, labels in after.values)
    assert not any("/no/such/page" in str(labels) for _, labels in after.values)

    operations = "tokenbank_ledger_operations_total"
    assert _delta(before, after, operations, operation="debit", outcome="ok") == 3
    assert _delta(before, after, operations, operation="debit", outcome="replay") == 1
    assert _delta(before, after, operations, operation="debit", outcome="insufficient") == 1

    # Group commit (on by default): the five debits went through its batches.
    batch = "tokenbank_group_commit_batch_operations"
    assert _delta(before, after, f"{batch}_sum") == 5
    batches = _delta(before, after, f"{batch}_count")
    assert 1 <= batches <= 5
    assert _delta(before, after, "tokenbank_group_commit_wait_seconds_count") == batches
    assert _delta(before, after, "tokenbank_group_commit_write_seconds_count") == batches


async def test_a_write_the_database_failed_counts_as_an_error(
    ops: Ops, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ops.services.tokens.open_wallet("alice")
    before = await ops.scrape()
    committer = ops.services.tokens._committer
    assert committer is not None

    async def database_down(operation: object) -> object:
        raise OperationalError("COMMIT", {}, ConnectionError("the server went away"))

    monkeypatch.setattr(committer, "submit", database_down)
    assert (await _deduct(ops, 1)).status_code == 503
    after = await ops.scrape()
    operations = "tokenbank_ledger_operations_total"
    assert _delta(before, after, operations, operation="debit", outcome="error") == 1
    assert _delta(before, after, operations, operation="debit", outcome="ok") == 0
    requests = "tokenbank_http_requests_total"
    assert _delta(before, after, requests, method="POST", route=DEDUCT, status="503") == 1


async def test_pool_use_is_read_at_each_scrape(ops: Ops) -> None:
    engine = await ops.services.tokens.engine()
    pool = engine.sync_engine.pool
    # The app warms the admin dashboard's sums at start, in the background, on a
    # connection of its own (web/warm.py): let it finish.
    for _ in range(250):
        if pool.checkedout() == 0:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.02)
    samples = await ops.scrape()
    assert samples.get("tokenbank_db_pool_size_connections") == pool.size()  # type: ignore[attr-defined]
    assert samples.get("tokenbank_db_pool_size_connections") >= 1
    # The scrape's own connection is back by the time the gauges are read.
    assert samples.get("tokenbank_db_pool_checked_out_connections") == 0
    async with engine.connect():
        held = await ops.scrape()
    assert held.get("tokenbank_db_pool_checked_out_connections") == 1


def _signed(payload: dict[str, object]) -> tuple[bytes, str]:
    body = json.dumps(payload)
    header = stripe.WebhookSignature.generate_signature_header(
        body, WEBHOOK_SECRET, int(time.time())
    )
    return body.encode(), header


async def test_stripe_events_are_counted_by_outcome(ops: Ops) -> None:
    before = await ops.scrape()
    event = {
        "id": "evt_ops_metrics_1",
        "object": "event",
        "type": "customer.created",  # not one tokenbank acts on: ignored
        "created": int(time.time()),
        "data": {"object": {"id": "cus_1"}},
    }
    body, signature = _signed(event)
    for _ in range(2):  # the second is a duplicate
        answer = await ops.client.post(
            "/api/stripe/webhook",
            content=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.text
    forged = await ops.client.post(
        "/api/stripe/webhook",
        content=body,
        headers={"Stripe-Signature": "t=1,v1=00", "Content-Type": "application/json"},
    )
    assert forged.status_code == 400
    after = await ops.scrape()
    assert _delta(before, after, "tokenbank_stripe_events_received_total") == 3
    events = "tokenbank_stripe_events_total"
    assert _delta(before, after, events, outcome="ignored") == 1
    assert _delta(before, after, events, outcome="duplicate") == 1
    assert _delta(before, after, events, outcome="rejected") == 1
    assert _delta(before, after, events, outcome="applied") == 0


async def test_job_runs_are_counted_by_job_and_outcome(
    ops: Ops, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = JobsWorker(ops.services.tokens)
    before = await ops.scrape()
    await worker.sweep()

    async def broken() -> tuple[int, int, int]:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(ops.services.tokens, "sweep", broken)
    with pytest.raises(RuntimeError):
        await worker.sweep()
    after = await ops.scrape()
    runs = "tokenbank_job_runs_total"
    assert _delta(before, after, runs, job="sweeps", outcome="ok") == 1
    assert _delta(before, after, runs, job="sweeps", outcome="error") == 1
    assert _delta(before, after, "tokenbank_job_duration_seconds_count", job="sweeps") == 2


async def test_webhook_delivery_metrics_take_what_the_delivery_code_records(ops: Ops) -> None:
    before = await ops.scrape()
    metrics.record_webhook_delivery("delivered", lag_seconds=2.5)
    metrics.record_webhook_delivery("failed")
    metrics.record_webhook_delivery("something new")  # counted, under a bounded label
    after = await ops.scrape()
    deliveries = "tokenbank_webhook_deliveries_total"
    assert _delta(before, after, deliveries, outcome="delivered") == 1
    assert _delta(before, after, deliveries, outcome="failed") == 1
    assert _delta(before, after, deliveries, outcome="other") == 1
    lag = "tokenbank_webhook_delivery_lag_seconds"
    assert _delta(before, after, f"{lag}_count") == 1
    assert _delta(before, after, f"{lag}_sum") == pytest.approx(2.5)
    assert _delta(before, after, f"{lag}_bucket", le="1.0") == 0
    assert _delta(before, after, f"{lag}_bucket", le="5.0") == 1


async def test_metrics_need_an_admin_key_unless_public(make_ops: OpsFactory) -> None:
    async with make_ops() as ops:
        assert (await ops.client.get("/metrics")).status_code == 401
        wrong = await ops.client.get("/metrics", headers={"Authorization": "Bearer tb_nope"})
        assert wrong.status_code == 401
        read_only = await ops.client.get("/metrics", headers=ops.headers("read"))
        assert read_only.status_code == 403
        assert read_only.json()["code"] == "forbidden"
        admin = await ops.client.get("/metrics", headers={"x-server-api-key": ops.keys["admin"]})
        assert admin.status_code == 200
        assert admin.headers["content-type"].startswith("text/plain")
        assert "tokenbank_http_requests_total" in admin.text
        # Not in the API's OpenAPI document: it is not part of the API.
        assert "/metrics" not in (await ops.client.get("/openapi.json")).json()["paths"]
    async with make_ops(metrics_public=True) as ops:
        open_scrape = await ops.client.get("/metrics")
        assert open_scrape.status_code == 200
        assert "tokenbank_ledger_operations_total" in open_scrape.text


def test_a_tally_folds_into_the_same_buckets_as_observing() -> None:
    """The request tally (one write per bucket at each fold) must leave the histogram
    exactly as observing each duration would: an observation on a bound goes in that
    bound's bucket, one past the last bound in +Inf, and the sum is exact."""
    durations = [0.0, 0.0004, 0.0005, 0.00051, 0.001, 0.3, 10.0, 10.5, 0.0005]
    tallied, observed = CollectorRegistry(), CollectorRegistry()
    labels = ("GET", "/t")
    folding = metrics.FoldingHistogram(
        "t_seconds", "t", ["method", "route"], buckets=metrics.HTTP_BUCKETS_SECONDS,
        registry=tallied,
    )  # fmt: skip
    plain = Histogram(
        "t_seconds", "t", ["method", "route"], buckets=metrics.HTTP_BUCKETS_SECONDS,
        registry=observed,
    )  # fmt: skip
    counted, reference = Counter("t", "t", registry=tallied), Counter("t", "t", registry=observed)
    tally = metrics.RequestTally()
    for seconds in durations:
        tally.add(counted, folding.labels(*labels), seconds)
        plain.labels(*labels).observe(seconds)
        reference.inc()
    assert _values(tallied) != _values(observed)  # nothing folded yet
    tally.fold()
    assert _values(tallied) == _values(observed)
    assert _values(observed)[("t_seconds_bucket", ("GET", "/t", "0.0005"))] == 4
    tally.fold()  # a second fold adds nothing
    assert _values(tallied) == _values(observed)


def _values(registry: CollectorRegistry) -> dict[tuple[str, tuple[str, ...]], float]:
    """Every sample but the creation times (which differ by when each was made)."""
    return {
        (sample.name, tuple(sample.labels.values())): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }
