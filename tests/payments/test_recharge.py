"""Auto-recharge on both engines, against localstripe: a debit that takes the wallet
below its threshold queues one recharge in its own transaction (on every write path);
the worker charges the saved card once and credits an ``auto_recharge`` paid grant;
a declined card turns auto-recharge off with the reason and credits nothing; Stripe
being unreachable queues the recharge again; bad input writes nothing. The books
pass the audit after every test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import stripe
from sqlalchemy import select
from typer.testing import CliRunner

from tests.api.conftest import Api
from tests.payments.support import (
    PUBLISHABLE_KEY,
    SECRET_KEY,
    count,
    event,
    payment_service,
    signed,
    stripe_settings,
)
from tokenbank import ManualClock, TokenService
from tokenbank.cli import app as cli
from tokenbank.config import get_settings
from tokenbank.db.engine import write_transaction
from tokenbank.db.models import (
    AutoRechargeSetting,
    LedgerTransaction,
    Purchase,
    Recharge,
)
from tokenbank.errors import InvalidInput
from tokenbank.jobs.worker import JobsWorker
from tokenbank.ledger.operations import Debit
from tokenbank.payments import repository as repo
from tokenbank.payments.errors import CustomerWalletNotFound, PackNotFound
from tokenbank.payments.purchases import new_purchase_id, purchase_values
from tokenbank.payments.recharge import NO_LONGER_NEEDED, STALE_CLAIM, RechargeService
from tokenbank.payments.service import PaymentService
from tokenbank.testing.localstripe import LocalStripe

VISA = "4242424242424242"
DECLINES_CHARGES = "4000000000000341"
STARTER_TOKENS = 150_000
STARTER_CENTS = 1_500
THRESHOLD = 10_000
USER = "alice"


@dataclass
class Bank:
    """The services a recharge test drives, and the SDK on the same localstripe."""

    tokens: TokenService
    payments: PaymentService
    recharges: RechargeService
    stripe: stripe.StripeClient


@pytest.fixture
async def bank(
    service: TokenService, localstripe: LocalStripe, stripe_client: stripe.StripeClient
) -> AsyncIterator[Bank]:
    payments = await payment_service(service, localstripe.api_base)
    await (await payments.packs()).seed_defaults()
    await service.open_wallet(USER)
    await service.credit(USER, amount=20_000, operation_type="bonus")
    yield Bank(service, payments, RechargeService(payments, service), stripe_client)
    await payments.aclose()
    assert (await service.audit()).ok


def confirmed_card(client: stripe.StripeClient, setup_intent_id: str, number: str) -> str:
    """What Stripe.js does in the page: confirm the SetupIntent with a card; its id."""
    method = client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    setup = client.v1.setup_intents.confirm(setup_intent_id, {"payment_method": method.id})
    assert setup.status == "succeeded" and isinstance(setup.payment_method, str)
    return setup.payment_method


async def save_card(bank: Bank, number: str = VISA, user_id: str = USER) -> str:
    """A card saved through tokenbank's SetupIntent, then attached (localstripe does not
    attach a SetupIntent's card)."""
    setup = await bank.recharges.start_card_setup(user_id)
    method = confirmed_card(bank.stripe, setup.setup_intent_id, number)
    saved = await bank.recharges.save_card(user_id, method)
    assert (saved.payment_method_id, saved.enabled) == (method, False)
    return method


async def arm(bank: Bank, number: str = VISA, user_id: str = USER) -> str:
    method = await save_card(bank, number, user_id)
    settings = await bank.recharges.configure(
        user_id, enabled=True, threshold_tokens=THRESHOLD, pack_id="starter"
    )
    assert (settings.enabled, settings.payment_method_id) == (True, method)
    return method


async def recharges(tokens: TokenService) -> list[Any]:
    async with (await tokens.engine()).connect() as conn:
        return list((await conn.execute(select(Recharge).order_by(Recharge.id))).all())


async def auto_recharge_credits(tokens: TokenService) -> int:
    return await count(
        tokens, LedgerTransaction, LedgerTransaction.operation_type == "auto_recharge"
    )


async def available(tokens: TokenService, user_id: str = USER) -> int:
    balance = await tokens.get_balance(user_id)
    assert balance is not None
    return balance.available


async def customer_of(bank: Bank, user_id: str = USER) -> str:
    async with (await bank.tokens.engine()).connect() as conn:
        found = await repo.customer_id(conn, user_id)
    assert found is not None
    return found


def intents_of(client: stripe.StripeClient, customer: str) -> list[dict[str, Any]]:
    """The PaymentIntents localstripe holds for one customer (it is shared by the session)."""
    every = client.v1.payment_intents.list({"limit": 100}).auto_paging_iter()
    return [intent.to_dict() for intent in every if intent.customer == customer]


# --- queueing: the database's trigger, in the debit's own transaction ------------------------


async def test_a_debit_across_the_threshold_queues_one_recharge(bank: Bank) -> None:
    await arm(bank)
    assert (await bank.tokens.debit(USER, amount=5_000)).success  # 15,000: above
    assert await recharges(bank.tokens) == []
    assert not (await bank.tokens.debit(USER, amount=999_999)).success  # refused: none
    assert await recharges(bank.tokens) == []
    assert (await bank.tokens.debit(USER, amount=6_000)).success  # 9,000: crossed
    [queued] = await recharges(bank.tokens)
    assert (queued.status, queued.available_tokens, queued.purchase_id) == ("queued", 9_000, None)
    # Up again and across again while one is queued: the partial unique index keeps one.
    await bank.tokens.credit(USER, amount=5_000, operation_type="bonus")
    assert (await bank.tokens.debit(USER, amount=6_000)).success
    assert len(await recharges(bank.tokens)) == 1


@pytest.mark.parametrize("with_refusal", [False, True])
async def test_several_debits_in_one_batch_queue_one_recharge(
    bank: Bank, with_refusal: bool
) -> None:
    """The kernel writes one UPDATE per wallet for the debits it settles (20,000 to
    5,000: one crossing); a debit it cannot cover goes per operation with every later
    one on that wallet (the kernel's UPDATE crosses to 8,000, then 5,000 per operation:
    still one recharge)."""
    await arm(bank)
    debits = [6_000, 6_000, *([999_999] if with_refusal else []), 3_000]
    results = await bank.tokens.apply(
        [Debit(user_id=USER, amount_tokens=amount) for amount in debits]
    )
    assert [result.success for result in results] == [amount < 20_000 for amount in debits]
    assert await available(bank.tokens) == 5_000
    [queued] = await recharges(bank.tokens)
    assert (queued.status, queued.available_tokens) == ("queued", 8_000 if with_refusal else 5_000)


async def test_a_debit_on_the_per_operation_path_queues_one_recharge(bank: Bank) -> None:
    await arm(bank)
    # A wallet with a pending hold goes per operation (the kernel leaves it alone).
    hold = await bank.tokens.hold(USER, 4_000)
    assert hold.success
    assert await recharges(bank.tokens) == []  # 16,000 available: above
    assert (await bank.tokens.debit(USER, amount=7_000)).success  # 9,000 available
    [queued] = await recharges(bank.tokens)
    assert queued.available_tokens == 9_000


async def test_enabling_below_the_threshold_queues_at_once(bank: Bank) -> None:
    await save_card(bank)
    await bank.recharges.configure(USER, enabled=True, threshold_tokens=50_000, amount_cents=1_000)
    [queued] = await recharges(bank.tokens)
    assert queued.available_tokens == 20_000
    await bank.recharges.configure(USER, enabled=True, threshold_tokens=60_000, amount_cents=1_000)
    assert len(await recharges(bank.tokens)) == 1  # still the one in flight


# --- the worker ---------------------------------------------------------------------------------


async def test_the_worker_charges_the_saved_card_once_and_credits_a_paid_grant(
    bank: Bank,
) -> None:
    method = await arm(bank)
    await bank.tokens.debit(USER, amount=15_000)  # 5,000: crossed
    [run] = await bank.recharges.run_recharges(10)
    assert (run.status, run.user_id) == ("succeeded", USER)
    assert await bank.recharges.run_recharges(10) == []  # nothing left: charged once
    balance = await bank.tokens.get_balance(USER)
    assert balance is not None
    assert (balance.available, balance.paid_tokens) == (5_000 + STARTER_TOKENS, STARTER_TOKENS)
    assert await auto_recharge_credits(bank.tokens) == 1
    purchase = await bank.payments.get_purchase(str(run.purchase_id))
    assert (purchase.kind, purchase.status, purchase.tokens) == (
        "auto_recharge",
        "paid",
        STARTER_TOKENS,
    )
    [recharge] = await recharges(bank.tokens)
    assert (recharge.status, recharge.purchase_id, recharge.error) == (
        "succeeded",
        purchase.id,
        None,
    )
    [intent] = intents_of(bank.stripe, await customer_of(bank))
    assert (intent["amount"], intent["status"], intent["payment_method"]) == (
        STARTER_CENTS,
        "succeeded",
        method,
    )
    assert intent["id"] == purchase.stripe_payment_intent_id
    assert intent["metadata"] == {"tokenbank_purchase_id": purchase.id, "tokenbank_user_id": USER}
    # Stripe's payment_intent.succeeded comes later: the purchase is paid already.
    body, header = signed(event("payment_intent.succeeded", intent))
    assert (await bank.payments.take_webhook(body, header)).outcome == "ignored"
    assert await auto_recharge_credits(bank.tokens) == 1


async def test_each_crossing_is_one_recharge(bank: Bank) -> None:
    await arm(bank)
    await bank.tokens.debit(USER, amount=15_000)
    await bank.recharges.run_recharges(10)
    await bank.tokens.debit(USER, amount=STARTER_TOKENS)  # 5,000 again: a new crossing
    [run] = await bank.recharges.run_recharges(10)
    assert run.status == "succeeded"
    assert await auto_recharge_credits(bank.tokens) == 2
    assert len(intents_of(bank.stripe, await customer_of(bank))) == 2


async def test_two_workers_at_once_charge_each_recharge_once(
    bank: Bank, localstripe: LocalStripe
) -> None:
    users = [f"user-{n}" for n in range(6)]
    for user_id in users:
        await bank.tokens.open_wallet(user_id)
        await bank.tokens.credit(user_id, amount=20_000, operation_type="bonus")
        await arm(bank, user_id=user_id)
        await bank.tokens.debit(user_id, amount=15_000)
    other = await payment_service(bank.tokens, localstripe.api_base)
    try:
        second = RechargeService(other, bank.tokens)
        first_runs, second_runs = await asyncio.gather(
            bank.recharges.run_recharges(4), second.run_recharges(4)
        )
        rest = await bank.recharges.run_recharges(10)
    finally:
        await other.aclose()
    # Six queued, at most four claimed by each: both took some, none took one twice.
    assert (len(first_runs) + len(second_runs), rest) == (len(users), [])
    runs = first_runs + second_runs
    assert sorted(run.user_id or "" for run in runs) == users
    assert {run.status for run in runs} == {"succeeded"}
    assert await auto_recharge_credits(bank.tokens) == len(users)
    for user_id in users:
        assert len(intents_of(bank.stripe, await customer_of(bank, user_id))) == 1
        assert await available(bank.tokens, user_id) == 5_000 + STARTER_TOKENS


async def test_a_declined_card_turns_auto_recharge_off_and_credits_nothing(bank: Bank) -> None:
    await arm(bank, DECLINES_CHARGES)
    await bank.tokens.debit(USER, amount=15_000)
    [run] = await bank.recharges.run_recharges(10)
    assert (run.status, run.detail) == ("failed", "Your card was declined.")
    settings = await bank.recharges.get(USER)
    assert (settings.enabled, settings.disabled_reason) == (False, "Your card was declined.")
    purchase = await bank.payments.get_purchase(str(run.purchase_id))
    assert (purchase.kind, purchase.status, purchase.failure_reason) == (
        "auto_recharge",
        "failed",
        "Your card was declined.",
    )
    [recharge] = await recharges(bank.tokens)
    assert (recharge.status, recharge.error) == ("failed", "Your card was declined.")
    assert await auto_recharge_credits(bank.tokens) == 0
    assert await available(bank.tokens) == 5_000
    # Disarmed: crossing again queues nothing.
    await bank.tokens.credit(USER, amount=10_000, operation_type="bonus")
    await bank.tokens.debit(USER, amount=10_000)
    assert len(await recharges(bank.tokens)) == 1
    # Re-enabling clears the reason (and, below the threshold, queues at once).
    again = await bank.recharges.configure(
        USER, enabled=True, threshold_tokens=THRESHOLD, pack_id="starter"
    )
    assert (again.enabled, again.disabled_reason) == (True, None)
    assert [r.status for r in await recharges(bank.tokens)] == ["failed", "queued"]


async def test_a_payment_failed_event_turns_a_pending_recharge_off(bank: Bank) -> None:
    """Stripe's payment_intent.payment_failed may arrive before the worker hears the
    decline: it turns auto-recharge off too; a failed pack purchase does not."""
    await arm(bank)
    order = await bank.payments.order(pack_id="starter", amount_cents=None)
    now = bank.tokens.clock()
    ids = {}
    async with (await bank.tokens.engine()).begin() as conn:
        for kind in ("pack", "auto_recharge"):
            ids[kind] = new_purchase_id()
            values = purchase_values(ids[kind], USER, order, now) | {"kind": kind}
            await repo.insert_purchase(conn, values)

    async def failed(kind: str) -> str:
        intent = {
            "id": f"pi_{ids[kind][4:28]}",
            "object": "payment_intent",
            "status": "requires_payment_method",
            "metadata": {"tokenbank_purchase_id": ids[kind]},
            "last_payment_error": {"message": "Your card was declined."},
        }
        body, header = signed(event("payment_intent.payment_failed", intent))
        return (await bank.payments.take_webhook(body, header)).outcome

    assert await failed("pack") == "applied"
    assert (await bank.recharges.get(USER)).enabled
    assert await failed("auto_recharge") == "applied"
    settings = await bank.recharges.get(USER)
    assert (settings.enabled, settings.disabled_reason) == (False, "Your card was declined.")


async def test_stripe_out_of_reach_queues_the_recharge_again(bank: Bank) -> None:
    await arm(bank)
    await bank.tokens.debit(USER, amount=15_000)
    # Nothing listens on port 9 of loopback: the charge cannot reach "Stripe".
    down = await payment_service(bank.tokens, "http://127.0.0.1:9")
    try:
        [run] = await RechargeService(down, bank.tokens).run_recharges(10)
    finally:
        await down.aclose()
    assert run.status == "queued"
    [recharge] = await recharges(bank.tokens)
    assert (recharge.status, recharge.purchase_id) == ("queued", run.purchase_id)
    assert recharge.error is not None and "Stripe" in recharge.error
    purchase = await bank.payments.get_purchase(str(run.purchase_id))
    assert purchase.status == "failed"
    assert (await bank.recharges.get(USER)).enabled  # not the card's fault
    # Stripe is back: the next pass charges the same purchase.
    [retried] = await bank.recharges.run_recharges(10)
    assert (retried.status, retried.purchase_id) == ("succeeded", run.purchase_id)
    assert await count(bank.tokens, Purchase) == 1
    assert await auto_recharge_credits(bank.tokens) == 1


async def test_a_worker_stopped_mid_pass_puts_what_it_claimed_back(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [USER, "bob"]
    await bank.tokens.open_wallet("bob")
    await bank.tokens.credit("bob", amount=20_000, operation_type="bonus")
    for user_id in users:
        await arm(bank, user_id=user_id)
        await bank.tokens.debit(user_id, amount=15_000)
    charging = asyncio.Event()

    async def hang(params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        charging.set()
        await asyncio.sleep(3_600)
        raise AssertionError("never answered")

    monkeypatch.setattr(bank.payments.gateway, "charge_off_session", hang)
    task = asyncio.create_task(bank.recharges.run_recharges(10))
    await asyncio.wait_for(charging.wait(), 10)
    assert [r.status for r in await recharges(bank.tokens)] == ["processing", "processing"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = await recharges(bank.tokens)
    assert [(r.status, r.error) for r in rows] == [("queued", "the worker stopped")] * 2
    assert rows[0].purchase_id is not None  # the one being charged keeps its purchase
    monkeypatch.undo()
    runs = await bank.recharges.run_recharges(10)
    assert [run.status for run in runs] == ["succeeded", "succeeded"]
    assert runs[0].purchase_id == rows[0].purchase_id  # the same charge, sent again
    assert await auto_recharge_credits(bank.tokens) == 2


async def test_a_claim_left_by_a_killed_worker_is_charged_by_a_later_pass(
    bank: Bank, clock: ManualClock
) -> None:
    await arm(bank)
    await bank.tokens.debit(USER, amount=15_000)
    async with write_transaction(await bank.tokens.engine()) as conn:
        # What a worker killed outright leaves: its claim, never finished.
        (claimed,) = await repo.claim_recharges(conn, 10, bank.tokens.clock())
    runs = await bank.recharges.run_recharges(10)
    assert runs == []  # a fresh claim may still be in its worker's hands
    clock.advance(STALE_CLAIM + timedelta(seconds=1))
    runs = await bank.recharges.run_recharges(10)
    assert [(run.recharge_id, run.status) for run in runs] == [(claimed.id, "succeeded")]
    assert await auto_recharge_credits(bank.tokens) == 1
    assert (await bank.tokens.audit()).ok


@pytest.mark.parametrize("change", ["topped up", "disabled", "suspended"])
async def test_a_recharge_no_longer_needed_is_not_charged(bank: Bank, change: str) -> None:
    await arm(bank)
    await bank.tokens.debit(USER, amount=15_000)
    if change == "topped up":
        await bank.tokens.credit(USER, amount=10_000, operation_type="bonus")
    elif change == "disabled":
        await bank.recharges.configure(
            USER, enabled=False, threshold_tokens=THRESHOLD, pack_id="starter"
        )
    else:
        await bank.tokens.set_wallet_status(USER, "suspended")
    [run] = await bank.recharges.run_recharges(10)
    expected = "the wallet is suspended" if change == "suspended" else NO_LONGER_NEEDED
    assert (run.status, run.detail, run.purchase_id) == ("failed", expected, None)
    [recharge] = await recharges(bank.tokens)
    assert (recharge.status, recharge.error) == ("failed", expected)
    assert await count(bank.tokens, Purchase) == 0
    assert intents_of(bank.stripe, await customer_of(bank)) == []
    if change == "suspended":
        await bank.tokens.set_wallet_status(USER, "active")


async def test_the_jobs_worker_charges_queued_recharges_when_stripe_is_configured(
    bank: Bank, database_url: str, clock: ManualClock, localstripe: LocalStripe
) -> None:
    await arm(bank)
    await bank.tokens.debit(USER, amount=15_000)
    assert not JobsWorker(bank.tokens).recharges_enabled  # no Stripe key: no job
    settings = stripe_settings(localstripe.api_base).model_copy(
        update={"database_url": database_url}
    )
    async with TokenService(settings=settings, clock=clock, auto_migrate=False) as tokens:
        worker = JobsWorker(tokens)
        assert worker.recharges_enabled
        await worker.run_once()
    assert await auto_recharge_credits(bank.tokens) == 1


def test_recharge_now_runs_one_pass_and_says_what_it_did(
    database_url: str, localstripe: LocalStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def queue_one() -> None:
        async with TokenService(database_url, welcome_bonus_tokens=0, auto_migrate=False) as bank:
            payments = await payment_service(bank, localstripe.api_base)
            try:
                await (await payments.packs()).seed_defaults()
                await bank.open_wallet(USER)
                await bank.credit(USER, amount=20_000, operation_type="bonus")
                await arm(Bank(bank, payments, RechargeService(payments, bank), stripe_client))
                await bank.debit(USER, amount=15_000)
            finally:
                await payments.aclose()

    def recharge_now() -> tuple[int, list[str]]:
        get_settings.cache_clear()  # the command reads the environment afresh
        try:
            result = CliRunner().invoke(
                cli, ["payments", "recharge-now", "--database-url", database_url]
            )
        finally:
            get_settings.cache_clear()
        assert "Traceback" not in result.output
        return result.exit_code, result.output.splitlines()

    stripe_client = localstripe.client()
    asyncio.run(queue_one())
    monkeypatch.delenv("TOKENBANK_STRIPE_SECRET_KEY", raising=False)
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    not_configured = "error: payments are not configured: set TOKENBANK_STRIPE_SECRET_KEY"
    assert recharge_now() == (1, [not_configured])
    monkeypatch.setenv("TOKENBANK_STRIPE_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("TOKENBANK_STRIPE_API_BASE", localstripe.api_base)
    code, (line, total) = recharge_now()
    assert code == 0
    assert line.startswith(f"recharge 1 ({USER}): succeeded, purchase pur_")
    assert line.endswith(f": credited {STARTER_TOKENS} tokens")
    assert total == "1 recharge(s): 1 succeeded, 0 failed, 0 queued again"
    assert recharge_now() == (0, ["0 recharge(s): 0 succeeded, 0 failed, 0 queued again"])


# --- the card ----------------------------------------------------------------------------------


async def test_a_setup_intent_succeeded_event_saves_the_card(bank: Bank) -> None:
    setup = await bank.recharges.start_card_setup(USER)
    assert setup.publishable_key == PUBLISHABLE_KEY
    assert setup.client_secret.startswith(setup.setup_intent_id)
    method = confirmed_card(bank.stripe, setup.setup_intent_id, VISA)
    succeeded = bank.stripe.v1.setup_intents.retrieve(setup.setup_intent_id).to_dict()
    assert succeeded["metadata"] == {"tokenbank_user_id": USER}
    body, header = signed(event("setup_intent.succeeded", succeeded))
    assert (await bank.payments.take_webhook(body, header)).outcome == "applied"
    assert (await bank.payments.take_webhook(body, header)).duplicate
    saved = await bank.recharges.get(USER)
    assert (saved.payment_method_id, saved.enabled) == (method, False)
    # Saved: enabling needs no paymentMethodId now.
    enabled = await bank.recharges.configure(
        USER, enabled=True, threshold_tokens=THRESHOLD, amount_cents=2_000
    )
    assert (enabled.enabled, enabled.amount_cents, enabled.pack_id) == (True, 2_000, None)
    foreign = {**succeeded, "customer": "cus_someone_else", "metadata": {}}
    body, header = signed(event("setup_intent.succeeded", foreign))
    assert (await bank.payments.take_webhook(body, header)).outcome == "ignored"


async def test_bad_terms_are_refused_and_write_nothing(bank: Bank) -> None:
    async def refused(error: type[Exception], **terms: Any) -> None:
        arguments: dict[str, Any] = {"enabled": True, "threshold_tokens": THRESHOLD} | terms
        user_id = arguments.pop("user_id", USER)
        with pytest.raises(error):
            await bank.recharges.configure(user_id, **arguments)

    await refused(PackNotFound, pack_id="no-such-pack")
    await refused(InvalidInput, amount_cents=499)  # under the minimum purchase
    await refused(InvalidInput, pack_id="starter", amount_cents=1_000)
    await refused(InvalidInput)  # neither
    await refused(InvalidInput, pack_id="starter", threshold_tokens=0)
    await refused(InvalidInput, pack_id="starter")  # enabling without a card
    await refused(CustomerWalletNotFound, pack_id="starter", user_id="nobody")
    assert await count(bank.tokens, AutoRechargeSetting) == 0
    assert await recharges(bank.tokens) == []


# --- HTTP ----------------------------------------------------------------------------------------


def auto_recharge_url(user_id: str = USER) -> str:
    return f"/api/users/{user_id}/auto-recharge"


async def test_the_api_saves_a_card_and_enables_auto_recharge(
    api: Api, stripe_client: stripe.StripeClient
) -> None:
    headers = api.headers("payments")
    answer = await api.client.get(auto_recharge_url(), headers=headers)
    assert answer.status_code == 200
    assert answer.json()["data"] == {
        "userId": USER,
        "enabled": False,
        "thresholdTokens": None,
        "packId": None,
        "amountCents": None,
        "paymentMethodId": None,
        "disabledReason": None,
        "updatedAt": None,
    }
    started = await api.client.post(auto_recharge_url() + "/setup-intent", headers=headers)
    assert started.status_code == 200
    setup = started.json()["data"]
    assert setup["publishableKey"] == PUBLISHABLE_KEY
    assert setup["clientSecret"].startswith(setup["setupIntentId"])
    method = confirmed_card(stripe_client, setup["setupIntentId"], VISA)
    body = {"enabled": True, "thresholdTokens": 5_000, "packId": "pro", "paymentMethodId": method}
    saved = await api.client.put(auto_recharge_url(), json=body, headers=headers)
    assert saved.status_code == 200, saved.text
    data = saved.json()["data"]
    assert (data["enabled"], data["thresholdTokens"], data["packId"], data["paymentMethodId"]) == (
        True,
        5_000,
        "pro",
        method,
    )
    assert data["updatedAt"] is not None
    assert (await api.client.get(auto_recharge_url(), headers=headers)).json()["data"] == data
    # The wallet is empty: below 5,000 already, so a recharge waits for the worker.
    assert [r.status for r in await recharges(api.tokens)] == ["queued"]


@pytest.mark.parametrize(
    ("user_id", "body", "status"),
    [
        (USER, {"enabled": False, "thresholdTokens": 10, "packId": "no-such-pack"}, 404),
        (USER, {"enabled": False, "thresholdTokens": 10, "amountCents": 499}, 400),
        (USER, {"enabled": False, "thresholdTokens": 10, "packId": "pro", "amountCents": 900}, 400),
        (USER, {"enabled": False, "thresholdTokens": 10}, 400),
        (USER, {"enabled": True, "thresholdTokens": 10, "packId": "pro"}, 400),  # no card
        (
            USER,
            {"enabled": True, "thresholdTokens": 10, "packId": "pro", "paymentMethodId": "pm_x"},
            400,
        ),
        ("nobody", {"enabled": False, "thresholdTokens": 10, "packId": "pro"}, 404),
        (USER, {"enabled": False, "thresholdTokens": 0, "packId": "pro"}, 422),
        (USER, {"enabled": False, "thresholdTokens": 10.0, "packId": "pro"}, 422),
        (USER, {"enabled": "yes", "thresholdTokens": 10, "packId": "pro"}, 422),
        (USER, {"enabled": False, "thresholdTokens": 10, "packId": "pro", "extra": 1}, 422),
        (USER, {"thresholdTokens": 10, "packId": "pro"}, 422),
    ],
)
async def test_the_api_refuses_bad_input_and_writes_nothing(
    api: Api, user_id: str, body: dict[str, Any], status: int
) -> None:
    answer = await api.client.put(
        auto_recharge_url(user_id), json=body, headers=api.headers("payments")
    )
    assert answer.status_code == status, answer.text
    assert "error" in answer.json()
    assert await count(api.tokens, AutoRechargeSetting) == 0


async def test_the_api_needs_the_payments_scope_and_a_wallet(api: Api) -> None:
    for scope in ("read", "spend", "admin"):
        answer = await api.client.get(auto_recharge_url(), headers=api.headers(scope))
        assert answer.status_code == 403
    assert (await api.client.get(auto_recharge_url())).status_code == 401
    headers = api.headers("payments")
    assert (await api.client.get(auto_recharge_url("nobody"), headers=headers)).status_code == 404
    missing = await api.client.post(auto_recharge_url("nobody") + "/setup-intent", headers=headers)
    assert missing.status_code == 404
